"""`launcher=slurm`: one SLURM array job whose tasks each run the same study with `workers=auto` on a node.

`python -m dse.search ... launcher=slurm launcher.nodes=N storage=URL` checks the run as usual, then submits
one array job of N tasks through submitit (the library under Hydra's SLURM launcher). Each task runs the same
`python -m dse.search` command with `launcher=local workers=auto`, its own run directory
(<run_dir>/tasks/<i>/) and the storage URL in env DSE_STORAGE (never on a command line or in submitit's pickle).
Every task joins one study in that storage; dse's claims train each point once, whoever asks.

`launcher.wait=true` follows the study in the storage until the array ends, then writes the result files into
<run_dir>; `false` returns at once, printing the job ids and the `python -m dse.report` line to run later.

A task that reaches its time limit, or is preempted, gets SIGUSR2 (submitit asks for it `signal_delay_s`
before the limit): the task stops its search like SIGTERM does (the trial in flight ends FAIL `interrupted` and
is queued again), and submitit requeues the task, which joins the same study again (at most
`max_num_timeout` times for time limits). The search itself ignores SIGUSR2 (SLURM signals every process of
the step), so only the task decides when to stop it. `scancel` ends a task for good: SIGTERM reaches the
search directly, and its interrupted trial waits, queued, for another task or the next run.

SQLite is refused unless `launcher.shared_fs=true` declares that every node sees the run directory on one file
system whose locks work (a local disk of a one-node cluster): SQLite locking over NFS loses data.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from dse.errors import UserError
from dse.results import files as results
from dse.storage import default_url, mask, open_storage
from dse.trials.objective import counted

# Overrides the launcher sets in each task's command (the user's values for these are dropped).
OWN_KEYS = ("launcher", "storage", "run_dir", "progress")
STOP_WAIT_S = 600  # how long a stopping search may take to record its trial and write its files


@dataclass(frozen=True)
class SlurmConfig:
    """The `launcher` node of launcher=slurm, checked (keys as in Hydra's submitit launcher)."""

    nodes: int = 1  # array tasks, one node each
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 60  # each task's time limit; a task that reaches it is requeued
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    additional_parameters: dict = field(default_factory=dict)  # any other sbatch flag: {constraint: a100}
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit
    max_num_timeout: int = 3  # requeues after reaching the time limit
    wait: bool = True
    shared_fs: bool = False
    poll_s: float = 5.0  # how often launcher.wait reads the study's progress


def wanted(node: dict | None) -> bool:
    """Does the `launcher` node ask for SLURM?"""
    return (node or {}).get("name", "local") == "slurm"


INTEGERS = {"nodes": 1, "timeout_min": 1, "signal_delay_s": 0, "max_num_timeout": 0, "gpus_per_node": 0,
            "cpus_per_task": 1}  # key: its least value
OPTIONAL = ("gpus_per_node", "cpus_per_task", "mem_gb", "partition", "account", "qos")  # null: SLURM's default


def config(node: dict) -> SlurmConfig:
    """The launcher node as a SlurmConfig; a UserError naming the key for a bad value."""
    node = {k: v for k, v in node.items() if k != "name"}
    names = [f.name for f in dataclasses.fields(SlurmConfig)]
    for key, value in node.items():
        if key not in names:
            raise UserError(f"launcher.{key}: unknown key; valid: {', '.join(names)}")
        if value is None and key in OPTIONAL:
            continue
        if not _valid(key, value):
            raise UserError(f"launcher.{key}: must be {_expected(key)}, got {value!r}")
    return SlurmConfig(**{**node, "additional_parameters": dict(node.get("additional_parameters") or {})})


def _valid(key: str, value) -> bool:
    """Is `value` of the kind launcher.<key> takes?"""
    if key in INTEGERS:
        return isinstance(value, int) and not isinstance(value, bool) and value >= INTEGERS[key]
    if key in ("mem_gb", "poll_s"):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if key in ("wait", "shared_fs"):
        return isinstance(value, bool)
    if key == "additional_parameters":
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return isinstance(value, str)  # partition, account, qos


def _expected(key: str) -> str:
    """What launcher.<key> takes, in words."""
    if key in INTEGERS:
        return f"an integer >= {INTEGERS[key]}"
    return {"mem_gb": "a number > 0", "poll_s": "a number > 0", "wait": "true or false", "shared_fs": "true or false",
            "additional_parameters": "a mapping of sbatch flags to values"}.get(key, "a name")


def check_storage(url: str | None, run_dir: Path, conf: SlurmConfig) -> str:
    """The storage URL every task joins (absolute); SQLite is refused unless the file system is declared shared."""
    url = url or default_url(run_dir)
    if url.startswith("sqlite") and not conf.shared_fs:
        raise UserError(f"storage: SQLite ({mask(url)}) under launcher=slurm loses data when its file lies on NFS; "
                        "use storage=postgresql://... or, if every node sees this file on one file system whose "
                        "locks work, launcher.shared_fs=true")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{Path(url[len('sqlite:///'):]).resolve()}"  # the tasks may start elsewhere
    return url


def task_argv(argv: list[str], run_dir: Path, index: int) -> list[str]:
    """Task `index`'s command: the user's overrides minus OWN_KEYS (and launcher.*), run locally on its node."""
    keep = [a for a in argv if a.lstrip("+~").partition("=")[0].split(".")[0] not in OWN_KEYS]
    workers = [] if any(a.lstrip("+~").startswith("workers=") for a in keep) else ["workers=auto"]
    return [sys.executable, "-m", "dse.search", *keep, *workers, "launcher=local", "progress=false",
            "storage=${oc.env:DSE_STORAGE}", f"run_dir={Path(run_dir).resolve() / 'tasks' / str(index)}"]


class Task(submitit.helpers.Checkpointable):
    """One array task: run the search as a child process; on SIGUSR2 stop it cleanly and requeue the task."""

    def __init__(self, command: list[str], cwd: str, index: int):
        self.command, self.cwd, self.index = command, cwd, index
        self._child = None

    def __getstate__(self) -> dict:
        """What submitit pickles: the command, not the running child."""
        return {**self.__dict__, "_child": None}

    def __call__(self) -> int:
        """Run the search to its end; its exit code (143 when SIGTERM stopped it)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DSE_TASK": str(self.index)}  # DSE_TASK: its own sampler seed
        self._child = subprocess.Popen(self.command, cwd=self.cwd, env=env, preexec_fn=_ignore_usr2)
        while self._child.poll() is None:  # not wait(): checkpoint() runs in a signal handler and waits itself
            time.sleep(0.5)
        return self._child.returncode

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Stop the search like SIGTERM (its trial in flight is queued again), then hand submitit a fresh task."""
        child = self._child
        if child is not None and child.poll() is None:
            print("dse: time limit or preemption: stopping the search; the task is requeued", flush=True)
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                child.kill()
        return submitit.helpers.DelayedSubmission(Task(self.command, self.cwd, self.index))


def _ignore_usr2() -> None:
    """In the search process: ignore SIGUSR2 (inherited by its workers); the task stops it with SIGTERM."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def executor(conf: SlurmConfig, folder: Path, name: str) -> submitit.SlurmExecutor:
    """A submitit executor asking SLURM for one node per task with the configured resources."""
    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=conf.max_num_timeout)
    params = dict(job_name=f"dse-{name}", time=conf.timeout_min, nodes=1, ntasks_per_node=1,
                  signal_delay_s=conf.signal_delay_s, additional_parameters=dict(conf.additional_parameters))
    optional = dict(gpus_per_node=conf.gpus_per_node, cpus_per_task=conf.cpus_per_task, partition=conf.partition,
                    account=conf.account, qos=conf.qos, mem=f"{int(conf.mem_gb * 1024)}M" if conf.mem_gb else None)
    ex.update_parameters(**params, **{k: v for k, v in optional.items() if v is not None})
    return ex


def submit(argv: list[str], url: str, run_dir: Path, name: str, conf: SlurmConfig) -> list:
    """Submit the array job (one task per node); its submitit jobs."""
    if not _has("sbatch"):
        raise UserError("launcher=slurm: sbatch is not on PATH; run this on a SLURM login node "
                        "(or launcher=local)")
    os.environ["DSE_STORAGE"] = url  # sbatch passes the environment on; the pickle and command lines never see it
    ex = executor(conf, Path(run_dir).resolve() / "slurm", name)
    with ex.batch():
        jobs = [ex.submit(Task(task_argv(argv, run_dir, i), os.getcwd(), i)) for i in range(conf.nodes)]
    return jobs


def report_line(run_dir: Path, url: str, name: str) -> str:
    """The command that writes the result files later."""
    line = f"python -m dse.report {run_dir} --study {name}"
    return line if url == default_url(run_dir) else f"{line} --storage {mask(url)}"


def launch(argv: list[str], url: str | None, run_dir: Path, name: str, node: dict, say=print) -> int:
    """launcher=slurm: submit, then (launcher.wait) follow the study and write its result files; exit code."""
    conf = config(node)
    url = check_storage(url, run_dir, conf)
    jobs = submit(list(argv), url, run_dir, name, conf)
    array = jobs[0].job_id.split("_")[0]
    say(f"slurm: submitted array job {array}: {', '.join(j.job_id for j in jobs)}; "
        f"logs in {Path(run_dir) / 'slurm'}/")
    if not conf.wait:
        say(f"results, once it ends: {report_line(run_dir, url, name)}")
        return 0
    try:
        follow(array, url, run_dir, name, conf.poll_s, say)
    except KeyboardInterrupt:
        say(f"stopped following; the job keeps running (scancel {array} stops it); later: "
            f"{report_line(run_dir, url, name)}")
        return 130
    study = _load(url, run_dir, name)
    out = results.write_all(study, run_dir)
    trained = sum(counted(t) for t in study.get_trials(deepcopy=False))
    say(f"study {name}: {trained} trained, {len(out['front'])} on the Pareto front; results: {run_dir}/ "
        "(trials.csv, pareto.csv, pareto.png, pareto.html, best.yaml)")
    return _exit_code(jobs, say)


def follow(array: str, url: str, run_dir: Path, name: str, poll_s: float, say) -> None:
    """Print the study's counts whenever they change, until no task of the array is queued or running."""
    last = None
    while True:
        states = queued(array)
        line = _progress(url, run_dir, name) + (f"; tasks: {', '.join(states)}" if states else "")
        if line != last:
            say(line)
            last = line
        if not states:
            return
        time.sleep(poll_s)


GONE = "Invalid job id specified"  # squeue's error for a job SLURM no longer holds (it ended long ago)


def queued(array: str, tries: int = 3, wait_s: float = 2.0) -> list[str]:
    """'<task> <STATE>' of the array's tasks that SLURM still holds (pending, running, requeued, ...).

    Only squeue's "Invalid job id" means the job is gone. Any other failure (a busy controller's socket timeout,
    a controller restarting) is tried again; still failing, it is one entry '? (squeue: ...)': the job may be
    held, so a caller waiting for it keeps waiting. (Read as "gone", a timeout once made the launcher and the
    tests read the study before a requeued task had run.)"""
    why = ""
    for attempt in range(tries):
        done = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %T"], capture_output=True, text=True)
        if not done.returncode:
            return [line.strip() for line in done.stdout.splitlines() if line.strip()]
        if GONE in done.stderr:
            return []
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        if attempt + 1 < tries:
            time.sleep(wait_s)
    return [f"? (squeue: {why})"]


def _progress(url: str, run_dir: Path, name: str) -> str:
    """'study x: 3 trained, 1 running' from the storage ('study x: not created yet' before the first task)."""
    try:
        trials = _load(url, run_dir, name).get_trials(deepcopy=False)
    except KeyError:
        return f"study {name}: not created yet"
    running = sum(t.state.name == "RUNNING" for t in trials)
    return f"study {name}: {sum(counted(t) for t in trials)} trained, {running} running"


def _load(url: str, run_dir: Path, name: str):
    """The study in the storage (KeyError when no task has created it)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=open_storage(url, run_dir))


def _exit_code(jobs: list, say) -> int:
    """0 when every task's search ended normally; else 1, naming the task and its log."""
    code = 0
    for job in jobs:
        rc = _result(job)
        if rc != 0:
            say(f"slurm: task {job.job_id} ended with {rc}; log {job.paths.stdout}")
            code = 1
    return code


def _result(job) -> int | str:
    """The exit code of a task's search, or why there is none (cancelled, failed)."""
    if not job.paths.result_pickle.exists():
        return "no result (cancelled or killed)"
    try:
        return job.result()
    except Exception as exc:  # submitit re-raises the task's own error
        return f"error: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"


def _has(program: str) -> bool:
    """Is `program` on PATH?"""
    import shutil

    return shutil.which(program) is not None
