"""Shared helpers for the dse.search / dse.report / W&B tests: run the real entry points as subprocesses."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

# Tiny, fast settings: smoke fidelity on synthetic data, no progress bars, one thread (two threads on a busy
# 2-core machine spin against each other: a smoke trial went from ~3 s to ~30 s).
FAST = ["fidelity=smoke", "data=synthetic", "progress=false", "trainer.threads=1"]


def env() -> dict:
    """The environment of a test subprocess: two threads, W&B offline by absence of a key."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    out.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    return out


def run(module: str, *args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python -m <module> args…` in `cwd`, captured."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def search(*args: str, cwd: Path, fast: bool = True, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python -m dse.search` with the fast settings first (later args win)."""
    return run("dse.search", *((FAST if fast else []) + list(args)), cwd=cwd, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert exit 0, showing the output otherwise."""
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_study(run_dir: Path, name: str):
    """The Optuna study stored in run_dir/study.db."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}")


def search_here(*args: str, cwd: Path, fast: bool = True) -> subprocess.CompletedProcess:
    """`dse.search.main` in this process (no import cost), run in `cwd`; same result shape as `search`."""
    import contextlib
    import io

    from dse.search import main

    out, err, old = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main((FAST if fast else []) + list(args))
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(["dse.search", *args], rc, out.getvalue(), err.getvalue())
