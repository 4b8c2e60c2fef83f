"""`workers=auto|N`: one command runs N worker processes on one study's storage.

The parent has already created the study (and, for a grid, enqueued its cells). It then starts N copies of
the same `python -m dse.search` command with `workers=1`, each with its own devices and CPU threads, shows
one progress bar by polling the storage, forwards SIGINT/SIGTERM, and returns one exit code: 0 when every
worker ended normally, 128+signal when interrupted, 1 when any worker failed (its log tail is printed), and
LOST_EXIT (75) once its gRPC storage proxy stopped answering (one line; the workers get SIGTERM and are waited for).

Devices: with GPUs each worker gets `trainer.devices` of them (default 1) through CUDA_VISIBLE_DEVICES;
`auto` uses every visible GPU (8 GPUs, trainer.devices=2: 4 workers x 2). The parent never initialises
CUDA: it counts GPUs from CUDA_VISIBLE_DEVICES or `nvidia-smi -L`. On CPU the cores are split evenly
(OMP_NUM_THREADS/MKL_NUM_THREADS per worker); `auto` on CPU is one worker per 2 cores.

Several trials per GPU (single-GPU trials): a proxy-sized net uses a few percent of a large GPU.
`workers_per_gpu=K` packs K workers on each GPU (worker i on GPU i mod #GPUs); `workers=auto` then starts
#GPUs x K, and `workers=N` may exceed the GPUs up to #GPUs x K. With `workers_per_gpu=auto` (the
default) and `workers=auto`, K is measured (`trials_per_gpu`): one worker per GPU starts first, and its first
fit writes its GPU memory after a few steps (dse.train.probe.write_memory_probe); the parent turns that into one
trial's footprint (CUDA context + the allocator's peak) and starts the others:

    K = min(8, cores per GPU, floor((free - 2 GiB) / (1.5 x footprint))), at least 1

with `free` the GPU's free memory before the pool started (nvidia-smi). The 1.5 is room for later points of
the space that are larger than the first; the 2 GiB stays free for the driver and fragmentation; 8 because
packing gains little beyond it (bench/gpu.py --pack). On CPU nothing of this applies.

Each worker writes to <run_dir>/workers/<i>/ (its log is worker.log there); the storage URL reaches the
workers through the environment (DSE_STORAGE), never their command line.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from dse.errors import UserError
from dse.storage import LOST_EXIT, lost_line, mask, open_storage
from dse.train.probe import MEMORY_PROBE_ENV
from dse.trials import signals

# Overrides the parent sets for its workers (the user's values for these keys are dropped).
OWN_KEYS = ("workers", "storage", "run_dir", "progress")
GIB = 1 << 30
PACK_CAP, PACK_MARGIN, PACK_RESERVE = 8, 1.5, 2 * GIB  # the packing rule's constants (module docstring)
CONTEXT_GUESS = GIB  # a CUDA context and non-torch memory, when nvidia-smi cannot say free memory before the pool


@dataclass(frozen=True)
class PoolConfig:
    """What the pool is asked for: `workers` ('auto' or N), `workers_per_gpu` ('auto' or K), the GPUs one trial
    uses (trainer.devices when it is a number, else 1) and whether the bar shows. Checked where it is used."""

    workers: int | str = 1
    per_gpu: int | str = "auto"
    devices: int = 1
    progress: bool = True


@dataclass(frozen=True)
class Slot:
    """One worker's share of the machine."""

    index: int
    gpus: tuple[str, ...]
    threads: int
    probe: str = ""  # file where this worker's first fit writes its GPU memory (workers_per_gpu=auto)

    def env(self) -> dict[str, str]:
        """Environment variables that pin this worker to its share."""
        out = {"DSE_WORKER": str(self.index), "OMP_NUM_THREADS": str(self.threads),
               "MKL_NUM_THREADS": str(self.threads)}
        if self.gpus:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
            out["TORCHINDUCTOR_COMPILE_THREADS"] = str(self.threads)  # torch.compile's helper processes: its share
        if self.probe:
            out[MEMORY_PROBE_ENV] = self.probe
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


def plan(workers, devices: int = 1, gpus: list[str] | None = None, cores: int | None = None,
         per_gpu: int = 1) -> list[Slot]:
    """The slots for `workers` (an int or 'auto') with `devices` GPUs per trial and `per_gpu` trials per GPU."""
    gpus = visible_gpus() if gpus is None else list(gpus)
    cores = cores or os.cpu_count() or 1
    devices = max(1, int(devices or 1))
    if per_gpu > 1 and devices > 1:
        raise UserError(f"workers_per_gpu={per_gpu} packs single-GPU trials; trainer.devices={devices} "
                        "(use workers_per_gpu=1)")
    groups = len(gpus) // devices
    if workers == "auto":
        n = groups * per_gpu if gpus else max(1, cores // 2)
        if gpus and n == 0:
            raise UserError(f"trainer.devices={devices}: only {len(gpus)} GPU(s) visible")
    else:
        n = _count(workers)
    if gpus and n > groups * per_gpu:
        hint = f"; workers_per_gpu={-(-n // max(groups, 1))} packs them" if devices == 1 and groups else ""
        raise UserError(f"workers={n} with trainer.devices={devices} needs {n * devices} GPUs; "
                        f"{len(gpus)} visible ({','.join(gpus)}){hint}")
    threads = max(1, cores // n)
    return [Slot(i, tuple(gpus[(i % groups) * devices:(i % groups + 1) * devices]) if gpus else (), threads)
            for i in range(n)]


def per_gpu_setting(value) -> int | str:
    """workers_per_gpu: 'auto' or a positive integer, else a UserError naming the key."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"workers_per_gpu: {value!r} is not 'auto' or a positive integer")
    return value


def trials_per_gpu(free: int, footprint: int, cores: int, cap: int = PACK_CAP, margin: float = PACK_MARGIN,
                   reserve: int = PACK_RESERVE) -> int:
    """Trials to pack on one GPU: K = min(cap, cores, floor((free - reserve) / (margin x footprint))), >= 1."""
    fits = int(max(free - reserve, 0) // max(margin * footprint, 1))
    return max(1, min(cap, max(cores, 1), fits))


def footprint(probe: dict, free_before: int | None) -> tuple[int, int]:
    """(free memory to pack into, one trial's footprint) in bytes from a probe file and nvidia-smi's free before.

    footprint = the allocator's peak + what else the process holds (its CUDA context): free before the pool
    minus free at the probe, less what the allocator held then. Without `free_before`, CONTEXT_GUESS.
    """
    reserved, peak = int(probe["reserved"]), int(probe["peak_reserved"])
    if free_before is None:
        other = CONTEXT_GUESS
        free_before = int(probe["free"]) + reserved + other
    else:
        other = max(free_before - int(probe["free"]) - reserved, 0)
    return free_before, peak + other


def free_memory(gpu: str) -> int | None:
    """Free memory of one GPU in bytes (nvidia-smi, no CUDA in this process), or None when it cannot say."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-i", gpu, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout.split()
        return int(float(out[0])) << 20 if out else None  # MiB
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _count(workers) -> int:
    """A positive worker count, or a UserError naming the key."""
    try:
        n = int(workers)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UserError(f"workers: {workers!r} is not 'auto' or a positive integer")
    return n


def wanted(config: PoolConfig) -> bool:
    """Does this invocation start a pool (workers != 1 and not itself a worker)?"""
    return str(config.workers) != "1" and "DSE_WORKER" not in os.environ


def worker_argv(argv: list[str], run_dir: Path, index: int) -> list[str]:
    """The worker's command: the parent's overrides minus OWN_KEYS, plus the worker's own."""
    keep = [a for a in argv if a.lstrip("+~").partition("=")[0] not in OWN_KEYS]
    return [sys.executable, "-m", "dse.search", *keep, "workers=1", "progress=false",
            "storage=${oc.env:DSE_STORAGE}", f"run_dir={Path(run_dir) / 'workers' / str(index)}"]


def run(argv: list[str], config: PoolConfig, storage_url: str, study_name: str, run_dir: Path, total: int, counted,
        say=print) -> int:
    """Start the workers, show one progress bar until they end, and return the pool's exit code."""
    workers, devices, gpus = config.workers, config.devices, visible_gpus()
    setting = per_gpu_setting(config.per_gpu)
    probing = setting == "auto" and workers == "auto" and bool(gpus) and devices == 1
    slots = plan(workers, devices, gpus, per_gpu=1 if setting == "auto" or not gpus else setting)
    free_before = {}
    if probing:
        free_before = {g: free_memory(g) for g in gpus}
        slots = [replace(s, probe=str(_folder(run_dir, s.index) / "probe.json")) for s in slots]
        for s in slots:
            Path(s.probe).unlink(missing_ok=True)  # a resumed run's old probe says nothing about now
        say("pool: workers_per_gpu=auto: one worker per GPU measures a trial's GPU memory, then the others start")
    say(f"pool: {len(slots)} workers on {mask(storage_url)} ({', '.join(map(_describe, slots))})")
    signals.install()
    procs = [_start(argv, storage_url, run_dir, slot) for slot in slots]
    forwarded = 0
    bar = _bar(total, config.progress)
    storage = open_storage(storage_url, run_dir)
    lost = None
    try:
        while any(p.poll() is None for p in procs):
            if signals.requested() and forwarded != signals.requested():
                forwarded = _forward(procs, signals.requested())
            if probing and not signals.requested() and all(Path(s.probe).is_file() for s in slots):
                probing = False
                more = _packed(slots, gpus, free_before, total, say)
                procs += [_start(argv, storage_url, run_dir, slot) for slot in more]
                slots += more
            elif probing and any(p.poll() is not None for p in procs):
                probing = False
                say("pool: a worker ended before its probe was written; staying at one worker per GPU")
            if lost is None and (lost := _update(bar, storage, study_name, counted, storage_url)):
                print(f"error: {lost}", file=sys.stderr)  # the workers cannot record a trial: stop them, then exit
                forwarded = _forward(procs, signal.SIGTERM)
            time.sleep(1.0)
        if lost is None:
            lost = _update(bar, storage, study_name, counted, storage_url)
    finally:
        bar.close()
    if lost:
        for p in procs:
            p.wait()
        return LOST_EXIT
    return _exit_code(procs, slots, run_dir, signals.exit_code(), say)


def _packed(probes: list[Slot], gpus: list[str], free_before: dict, total: int, say) -> list[Slot]:
    """The workers to add once every GPU's first worker wrote its probe (the rule in the module docstring)."""
    cores = os.cpu_count() or 1
    ks = []
    for slot in probes:
        free, need = footprint(json.loads(Path(slot.probe).read_text()), free_before.get(slot.gpus[0]))
        ks.append(trials_per_gpu(free, need, cores // len(gpus)))
        say(f"pool: GPU {slot.gpus[0]}: one trial holds {need / GIB:.2f} GiB, {free / GIB:.1f} GiB free "
            f"-> {ks[-1]} per GPU")
    n = min(len(gpus) * min(ks), max(total, len(gpus)))
    more = plan("auto", 1, gpus, cores, per_gpu=min(ks))[len(probes):n]
    if more:
        say(f"pool: +{len(more)} workers ({', '.join(map(_describe, more))})")
    return more


def _folder(run_dir: Path, index: int) -> Path:
    """A worker's own folder (log, probe)."""
    return Path(run_dir) / "workers" / str(index)


def _describe(slot: Slot) -> str:
    """'#0: GPU 0,1' or '#0: 4 threads'."""
    return f"#{slot.index}: " + (f"GPU {','.join(slot.gpus)}" if slot.gpus else f"{slot.threads} threads")


def _start(argv, storage_url: str, run_dir: Path, slot: Slot) -> subprocess.Popen:
    """Start one worker in its own session (so Ctrl-C reaches it once, through the parent)."""
    folder = _folder(run_dir, slot.index)
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


def _update(bar, storage, study_name: str, counted, url: str) -> str | None:
    """Set the bar to the number of counted trials in the storage; the one line to print if its gRPC proxy
    stopped answering (dse.storage.lost_line), else None."""
    import optuna

    try:
        trials = storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False)
    except (optuna.exceptions.StorageInternalError, KeyError, OSError):
        return None
    except Exception as exc:  # noqa: BLE001  (only a lost proxy is expected; anything else is a bug)
        line = lost_line(exc, url)
        if line is None:
            raise
        return line
    done = sum(bool(counted(t)) for t in trials)
    running = sum(t.state.name == "RUNNING" for t in trials)
    bar.n = min(done, bar.total) if bar.total else done
    bar.set_postfix_str(f"running {running}", refresh=True)
    return None


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
