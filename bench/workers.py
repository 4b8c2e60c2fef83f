"""Completed trials per hour with 1 worker and with N (default 2) on this machine's CPU, same total trials.

usage: python bench/workers.py [--trials 8] [--workers 2] [override ...]
Each run is the real command, `python -m dse.search ... workers=K`, in a fresh run directory (its own SQLite
storage), timed from start to exit, so start-up, storage and data loading count too. The study is a grid of
one small ResNeXt point x `--trials` seeds, so both runs train exactly the same work (through the
exactly-once grid path). The last line is
`ratio: X` = throughput with N workers / throughput with 1. On a GPU machine, pass e.g. --workers 8 to
compare 1 GPU against 8.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["fidelity=smoke", "data=synthetic", "space=resnext", "progress=false", "logger=none"]
POINT = {"depth": 11, "cardinality": 4, "bottleneck_width": 4, "width": 32}


def study_file(folder: Path, name: str, seeds: int) -> Path:
    """A grid study: one point, `seeds` training seeds."""
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "space": "resnext", "seeds": seeds,
                                    "objectives": ["accuracy", "flops"],
                                    "grid": [{"label": "resnext11_4x4d_w32", "params": POINT}]}))
    return path


def run(workers: int, trials: int, overrides: list[str], folder: Path) -> tuple[int, float]:
    """(completed trials, wall seconds) of one search with `workers` workers."""
    run_dir = folder / f"w{workers}"
    study = study_file(folder, f"bench_w{workers}", trials)
    cmd = [sys.executable, "-m", "dse.search", f"study={study}", *DEFAULT, *overrides, f"run_dir={run_dir}",
           f"workers={workers}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"workers={workers} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    with sqlite3.connect(run_dir / "study.db") as db:
        done = db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    return done, seconds


def main() -> None:
    """Time 1 worker, then N, and print trials/hour for each and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra dse.search overrides, e.g. trainer.max_epochs=2")
    args = parser.parse_args()
    rates = {}
    with tempfile.TemporaryDirectory(prefix="dse-bench-") as tmp:
        for n in (1, args.workers):
            done, seconds = run(n, args.trials, args.overrides, Path(tmp))
            rates[n] = done / seconds * 3600
            print(f"workers={n}: {done} completed trials in {seconds:.1f} s = {rates[n]:.0f} trials/hour")
    print(f"cpus: {os.cpu_count()}, trials: {args.trials}, overrides: {' '.join(DEFAULT + args.overrides)}")
    print(f"ratio: {rates[args.workers] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
