"""`workers=auto|N`: one command runs N worker processes on one study's storage.

The parent has already created the study (and, for a grid, enqueued its cells). It then starts N copies of
the same `python -m dse.search` command with `workers=1`, each with its own devices and CPU threads, shows
one progress bar by polling the storage, forwards SIGINT/SIGTERM, and returns one exit code: 0 when every
worker ended normally, 128+signal when interrupted, 1 when any worker failed (its log tail is printed).

Devices: with GPUs each worker gets `trainer.devices` of them (default 1) through CUDA_VISIBLE_DEVICES;
`auto` uses every visible GPU (8 GPUs, trainer.devices=2: 4 workers x 2). The parent never initialises
CUDA: it counts GPUs from CUDA_VISIBLE_DEVICES or `nvidia-smi -L`. On CPU the cores are split evenly
(OMP_NUM_THREADS/MKL_NUM_THREADS per worker); `auto` on CPU is one worker per 2 cores.

Each worker writes to <run_dir>/workers/<i>/ (its log is worker.log there); the storage URL reaches the
workers through the environment (DSE_STORAGE), never their command line.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dse.errors import UserError
from dse.storage import mask

# Overrides the parent sets for its workers (the user's values for these keys are dropped).
OWN_KEYS = ("workers", "storage", "run_dir", "progress")


@dataclass(frozen=True)
class Slot:
    """One worker's share of the machine."""

    index: int
    gpus: tuple[str, ...]
    threads: int

    def env(self) -> dict[str, str]:
        """Environment variables that pin this worker to its share."""
        out = {"DSE_WORKER": str(self.index), "OMP_NUM_THREADS": str(self.threads),
               "MKL_NUM_THREADS": str(self.threads)}
        if self.gpus:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        return out


def visible_gpus(env=None) -> list[str]:
    """Ids of the GPUs this process may use, without initialising CUDA."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i in range(sum(line.startswith("GPU ") for line in out.splitlines()))]


def plan(workers, devices: int = 1, gpus: list[str] | None = None, cores: int | None = None) -> list[Slot]:
    """The slots for `workers` (an int or 'auto') with `devices` GPUs per trial."""
    gpus = visible_gpus() if gpus is None else list(gpus)
    cores = cores or os.cpu_count() or 1
    devices = max(1, int(devices or 1))
    if workers == "auto":
        n = len(gpus) // devices if gpus else max(1, cores // 2)
        if gpus and n == 0:
            raise UserError(f"trainer.devices={devices}: only {len(gpus)} GPU(s) visible")
    else:
        n = _count(workers)
    if gpus and n * devices > len(gpus):
        raise UserError(f"workers={n} with trainer.devices={devices} needs {n * devices} GPUs; "
                        f"{len(gpus)} visible ({','.join(gpus)})")
    threads = max(1, cores // n)
    return [Slot(i, tuple(gpus[i * devices:(i + 1) * devices]), threads) for i in range(n)]


def _count(workers) -> int:
    """A positive worker count, or a UserError naming the key."""
    try:
        n = int(workers)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UserError(f"workers: {workers!r} is not 'auto' or a positive integer")
    return n


def wanted(cfg: dict) -> bool:
    """Does this invocation start a pool (workers != 1 and not itself a worker)?"""
    return str(cfg.get("workers", 1)) != "1" and "DSE_WORKER" not in os.environ


def devices_per_trial(cfg: dict) -> int:
    """GPUs one trial uses (trainer.devices when it is a number, else 1)."""
    value = (cfg.get("trainer") or {}).get("devices", 1)
    return value if isinstance(value, int) and value > 0 else 1


def worker_argv(argv: list[str], run_dir: Path, index: int) -> list[str]:
    """The worker's command: the parent's overrides minus OWN_KEYS, plus the worker's own."""
    keep = [a for a in argv if a.lstrip("+~").partition("=")[0] not in OWN_KEYS]
    return [sys.executable, "-m", "dse.search", *keep, "workers=1", "progress=false",
            "storage=${oc.env:DSE_STORAGE}", f"run_dir={Path(run_dir) / 'workers' / str(index)}"]


def run(argv: list[str], cfg: dict, storage_url: str, study_name: str, run_dir: Path, total: int, counted,
        say=print) -> int:
    """Start the workers, show one progress bar until they end, and return the pool's exit code."""
    from dse import signals
    from dse.storage import open_storage

    slots = plan(cfg.get("workers", 1), devices_per_trial(cfg))
    say(f"pool: {len(slots)} workers on {mask(storage_url)} ({', '.join(map(_describe, slots))})")
    signals.install()
    procs = [_start(argv, storage_url, run_dir, slot) for slot in slots]
    forwarded = 0
    bar = _bar(total, cfg.get("progress", True))
    storage = open_storage(storage_url, run_dir)
    try:
        while any(p.poll() is None for p in procs):
            if signals.requested() and forwarded != signals.requested():
                forwarded = _forward(procs, signals.requested())
            _update(bar, storage, study_name, counted)
            time.sleep(1.0)
        _update(bar, storage, study_name, counted)
    finally:
        bar.close()
    return _exit_code(procs, slots, run_dir, signals.exit_code(), say)


def _describe(slot: Slot) -> str:
    """'#0: GPU 0,1' or '#0: 4 threads'."""
    return f"#{slot.index}: " + (f"GPU {','.join(slot.gpus)}" if slot.gpus else f"{slot.threads} threads")


def _start(argv, storage_url: str, run_dir: Path, slot: Slot) -> subprocess.Popen:
    """Start one worker in its own session (so Ctrl-C reaches it once, through the parent)."""
    folder = Path(run_dir) / "workers" / str(slot.index)
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **slot.env(), "DSE_STORAGE": storage_url, "PYTHONUNBUFFERED": "1"}
    log = open(folder / "worker.log", "ab")
    return subprocess.Popen(worker_argv(argv, run_dir, slot.index), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (Linux), so no orphan keeps training."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _forward(procs, signum: int) -> int:
    """Send the parent's signal to every live worker; a second one reaches them as their own second."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signum)
    return signum


def _bar(total: int, show: bool):
    """The pool's progress bar (finished trials of the study)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="study", unit="trial", disable=not show, file=sys.stderr, dynamic_ncols=True)


def _update(bar, storage, study_name: str, counted) -> None:
    """Set the bar to the number of counted trials in the storage."""
    import optuna

    try:
        trials = storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False)
    except (optuna.exceptions.StorageInternalError, KeyError, OSError):
        return
    done = sum(bool(counted(t)) for t in trials)
    running = sum(t.state.name == "RUNNING" for t in trials)
    bar.n = min(done, bar.total) if bar.total else done
    bar.set_postfix_str(f"running {running}", refresh=True)


def _exit_code(procs, slots, run_dir: Path, interrupted: int, say) -> int:
    """0 if all workers ended normally, 128+signal after an interrupt, else 1 (with each failure's log tail)."""
    code = interrupted
    for p, slot in zip(procs, slots):
        rc = p.wait()
        if rc == 0 or (interrupted and rc in (interrupted, 128 + signal.SIGINT, 128 + signal.SIGTERM)):
            continue
        log = Path(run_dir) / "workers" / str(slot.index) / "worker.log"
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.is_file() else []
        say(f"pool: worker {slot.index} exited with {rc}; log {log}:\n" + mask("\n".join(tail)))
        code = code or 1
    return code
