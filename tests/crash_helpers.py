"""Run `python -m dse.search` as a subprocess with a fault (DSE_TEST_FAULT), kill or signal it mid-trial."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = ["fidelity=smoke", "data=synthetic", "space=resnext", "sampler=random", "progress=false", "logger=none"]
# What a crash test adds when sizing and threads are not its subject: one torch thread (two spin against each other
# on 2 loaded cores: a sizing measurement took 39 s, a smoke trial 13 s) and no sizing measurement of a fresh study
QUICK = ["trainer.threads=1", "study.trials_per_timeout=null"]


def env(**extra) -> dict:
    """Test subprocess environment: 2 threads, offline, fast heartbeats (1 s, stale after 3 s)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "DSE_"))}
    out.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore",
               DSE_HEARTBEAT="1,3", **extra)
    return out


def command(run_dir: Path, name: str, n_trials: int, *extra: str) -> list[str]:
    """The search command line."""
    return [sys.executable, "-m", "dse.search", *FAST, f"study.name={name}", f"study.n_trials={n_trials}",
            f"run_dir={run_dir}", *extra]


def search(run_dir: Path, name: str, n_trials: int, *extra: str, timeout: int = 300, **env_extra):
    """Run the search to the end; the CompletedProcess."""
    return subprocess.run(command(run_dir, name, n_trials, *extra), cwd=ROOT, env=env(**env_extra),
                          capture_output=True, text=True, timeout=timeout)


def start(run_dir: Path, name: str, n_trials: int, *extra: str, **env_extra) -> subprocess.Popen:
    """Start the search in the background (output captured)."""
    return subprocess.Popen(command(run_dir, name, n_trials, *extra), cwd=ROOT, env=env(**env_extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_running(storage, name: str, at_least_complete: int, timeout: float = 180):
    """Poll the storage until a trial RUNNING after `at_least_complete` COMPLETE ones; that running trial."""
    import optuna

    from dse.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.CRITICAL)
    deadline = time.monotonic() + timeout
    opened = None
    while time.monotonic() < deadline:
        try:
            if opened is None and (not storage.startswith("sqlite:///") or Path(storage[10:]).is_file()):
                opened = open_storage(storage, ".")
            trials = optuna.load_study(study_name=name, storage=opened).get_trials(deepcopy=False) if opened else []
        except Exception:  # the storage or the study does not exist yet
            trials = []
        running = [t for t in trials if t.state.name == "RUNNING" and "point_id" in t.user_attrs]
        if running and sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) >= at_least_complete:
            return running[0]
        time.sleep(0.3)
    raise AssertionError(f"no trial started running within {timeout} s")


def trials(storage, name: str) -> list:
    """All trials of the study."""
    import optuna

    from dse.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=open_storage(storage, ".")).get_trials(deepcopy=False)


def ok(proc) -> None:
    """Assert exit 0, showing the output otherwise."""
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def kill_and_resume(tmp: Path, storage_url: str | None, name: str, *args: str) -> tuple[list, object]:
    """Trial 0 ends, trial 1 sleeps in training and is SIGKILLed, the command runs again (both with `args`):
    (trials, victim, rerun)."""
    import signal

    run_dir = tmp / name
    extra = ([f"storage={storage_url}"] if storage_url else []) + list(args)
    url = storage_url or f"sqlite:///{run_dir / 'study.db'}"
    proc = start(run_dir, name, 2, *extra, DSE_TEST_FAULT="sleep=60:2")
    try:
        victim = wait_running(url, name, at_least_complete=1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    rerun = search(run_dir, name, 2, *extra)
    ok(rerun)
    return trials(url, name), victim, rerun
