"""Run several claims workers (tests/claims_worker.py) on one storage, optionally SIGKILL one mid-trial."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

WORKER = Path(__file__).with_name("claims_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def start(url: str, name: str, labels: list[str], seeds: int, sleep_s: float, log: Path,
          heartbeat: str = "1,5") -> subprocess.Popen:
    """One worker process, heartbeat every 1 s, stale after 5 s (SQLite's clock counts whole seconds: a live
    worker's beat may be 3-4 s late on 2 loaded cores before its trial is taken from it)."""
    env = {**os.environ, "DSE_HEARTBEAT": heartbeat, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(WORKER), url, name, ",".join(labels), str(seeds), str(sleep_s)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=log.parent)


def run_pool(url: str, name: str, labels, seeds: int, n: int, tmp: Path, sleep_s: float = 0.3,
             kill_one: bool = False, timeout: float = 120) -> list[int]:
    """Start n workers; with kill_one, SIGKILL worker 0 once it has started a trial; wait; return exit codes."""
    procs = [start(url, name, labels, seeds, sleep_s, tmp / f"w{i}.log") for i in range(n)]
    try:
        if kill_one:
            deadline = time.monotonic() + timeout  # at load 27 a worker took 60 s to import and pop its first cell
            while "start" not in (tmp / "w0.log").read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            procs[0].send_signal(signal.SIGKILL)
        return [p.wait(timeout=timeout) for p in procs]
    finally:  # a test that fails or times out leaves no worker polling a deleted storage
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def per_cell(url: str, name: str) -> tuple[Counter, list]:
    """(COMPLETE trials per (cell, seed), all trials) of the study."""
    import optuna

    from dse.trials.claims import cell_of
    from dse.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(url, "."))
    trials = study.get_trials(deepcopy=False)
    done = Counter(cell_of(t) for t in trials if t.state.name == "COMPLETE")
    return done, trials
