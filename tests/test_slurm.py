"""launcher=slurm on a real one-node SLURM (the slurm_cluster fixture in conftest.py), and simultaneous starts.

The SLURM tests submit real array jobs through `python -m dse.search ... launcher=slurm` and read the study
back from its storage: a 2-task array trains one smoke study and writes the result files (launcher.wait=true);
`scancel` of one task mid-trial leaves that trial FAIL and retried by the other task; SIGUSR2 (what SLURM sends
before a time limit) stops a task cleanly, submitit requeues it and the requeued task finishes the study.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from crash_helpers import ROOT, env, trials
from search_helpers import read_csv
from dse.errors import UserError
from dse.trials import slurm

pytestmark = pytest.mark.xdist_group("slurm")  # one SLURM and one munged per machine: these run on one worker

FAST = ["fidelity=smoke", "data=synthetic", "space=resnext", "sampler=random", "progress=false", "logger=none",
        "trainer.threads=1", "study.timeout=null", "study.trials_per_timeout=null"]


def command(run_dir: Path, name: str, n_trials: int, *extra: str) -> list[str]:
    """`python -m dse.search` with launcher=slurm on a SQLite file the one node shares with itself."""
    return [sys.executable, "-m", "dse.search", *FAST, f"study.name={name}", f"study.n_trials={n_trials}",
            f"run_dir={run_dir}", "launcher=slurm", "launcher.shared_fs=true", "launcher.poll_s=1",
            "launcher.cpus_per_task=1", *extra]


def submit(run_dir: Path, name: str, n_trials: int, *extra: str, timeout: int = 240, **env_extra):
    """Run the launcher command to its end (with launcher.wait=false: until the jobs are submitted)."""
    return subprocess.run(command(run_dir, name, n_trials, *extra), cwd=ROOT, env=env(**env_extra),
                          capture_output=True, text=True, timeout=timeout)


def ok(proc) -> subprocess.CompletedProcess:
    """Assert exit 0, showing the output otherwise."""
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def array_id(proc) -> str:
    """The array job id from the launcher's 'submitted array job N' line."""
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("slurm: submitted array job"))
    return line.split()[4].rstrip(":")


def wait_gone(array: str, timeout: float = 180) -> None:
    """Until SLURM holds no task of the array."""
    deadline = time.monotonic() + timeout
    while slurm.queued(array):
        assert time.monotonic() < deadline, f"array {array} still queued: {slurm.queued(array)}"
        time.sleep(1)


def start_requeued_now(job: str, timeout: float = 120) -> None:
    """Once SLURM has requeued `job`, let it start now: a requeued job is held ~2 minutes (Reason=BeginTime),
    which an administrator may lift with `scontrol update StartTime=now`; the test does not wait for it."""
    deadline = time.monotonic() + timeout
    while "BeginTime" not in subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True,
                                            text=True).stdout:
        assert time.monotonic() < deadline, f"{job} was not requeued: {slurm.queued(job.split('_')[0])}"
        time.sleep(0.5)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)


def task_of(pid: int) -> str | None:
    """The SLURM array task id of a running process (from its environment); None once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next(f.split(b"=", 1)[1].decode() for f in fields if f.startswith(b"SLURM_ARRAY_TASK_ID="))


def training(url: str, name: str) -> list:
    """The study's RUNNING trials that have their point and owner ([] before a task created the study)."""
    if not Path(url[len("sqlite:///"):]).is_file():
        return []
    try:
        found = trials(url, name)
    except KeyError:
        return []
    return [t for t in found if t.state.name == "RUNNING" and "dse:owner" in t.system_attrs
            and "point_id" in t.user_attrs]


def owner_pid(trial) -> int:
    """The pid of the process that ran a trial (dse.trials.owners' system attr)."""
    return int(trial.system_attrs["dse:owner"]["pid"])


@pytest.mark.slow
def test_two_task_array_trains_one_study_and_writes_results(slurm_cluster, tmp_path):
    """launcher.wait=true: both tasks train one study on one storage, and the launcher writes its result files."""
    run_dir = tmp_path / "r"
    proc = ok(submit(run_dir, "arr", 4, "launcher.nodes=2", "launcher.wait=true", "workers=1"))
    url = f"sqlite:///{run_dir / 'study.db'}"
    done = [t for t in trials(url, "arr") if t.state.name == "COMPLETE" and t.user_attrs.get("status") == "ok"]
    assert len(done) >= 4
    cells = [(t.user_attrs["point_id"], t.user_attrs["seed"]) for t in done]
    assert len(set(cells)) == len(cells)  # no point trained twice with one seed
    firsts = [t.user_attrs["point_id"] for t in done if t.user_attrs.get("repeat_of") is None]
    assert len(set(firsts)) == len(firsts)  # a point comes back only as a seed-noise repeat (next seed)
    assert len({owner_pid(t) for t in done}) == 2, "both array tasks trained"
    rows = read_csv(run_dir / "trials.csv")  # written by the launcher once the array ended
    assert sorted(int(r["number"]) for r in rows if r["status"] == "ok") == sorted(t.number for t in done)
    for name in ("pareto.csv", "pareto.png", "pareto.html", "best.yaml"):
        assert (run_dir / name).is_file(), name
    assert all((run_dir / "tasks" / str(i) / "trials.csv").is_file() for i in (0, 1))
    assert f"study arr: {len(done)} trained" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_scancel_and_requeue_mid_trial(slurm_cluster, tmp_path):
    """Task A gets SIGUSR2 mid-trial (a time limit): requeued, it continues the study. Task B is scancel'ed
    mid-trial: its trial is FAIL and retried by A. Nothing is left RUNNING; no point is trained twice."""
    run_dir = tmp_path / "r"
    url = f"sqlite:///{run_dir / 'study.db'}"
    proc = ok(submit(run_dir, "pre", 2, "launcher.nodes=2", "launcher.wait=false", DSE_TEST_FAULT="sleep=8:1"))
    array = array_id(proc)
    assert f"python -m dse.report {run_dir}" in proc.stdout
    signals = {"0": ["scancel", "--signal=USR2", f"{array}_0"],  # what SLURM sends before a time limit
               "1": ["scancel", f"{array}_1"]}
    by_task, deadline = {}, time.monotonic() + 180
    while len(by_task) < 2:  # each task, once it trains its first (sleeping) trial
        assert time.monotonic() < deadline, f"tasks that trained: {list(by_task)}"
        for t in training(url, "pre"):
            task = task_of(owner_pid(t))
            if task is not None and task not in by_task:
                subprocess.run(signals[task], check=True)
                by_task[task] = t
        time.sleep(0.3)
    start_requeued_now(f"{array}_0")
    wait_gone(array)
    final = {t.number: t for t in trials(url, "pre")}
    why = story(final, run_dir)  # on a failure: every trial and the tasks' logs
    assert not [t for t in final.values() if t.state.name == "RUNNING"], why
    for task, victim in by_task.items():
        stopped = final[victim.number]
        assert stopped.state.name == "FAIL" and stopped.user_attrs.get("reason") == "interrupted", f"{task}\n{why}"
        retried = [t for t in final.values() if t.number > victim.number and t.params == victim.params
                   and t.user_attrs.get("status") == "ok"]
        assert len(retried) == 1, f"task {task}'s trial {victim.number} retried once\n{why}"
    ok_trials = [t for t in final.values() if t.user_attrs.get("status") == "ok"]
    assert len(ok_trials) >= 2 and len({t.user_attrs["point_id"] for t in ok_trials}) == len(ok_trials)
    log = (run_dir / "slurm" / f"{array}_0_0_log.out").read_text() + \
        (run_dir / "slurm" / f"{array}_0_0_log.err").read_text()
    assert log.count("Starting with JobEnvironment") == 2 and "Requeued job" in log, log[-3000:]


def story(final: dict, run_dir: Path) -> str:
    """Every trial (number, state, status, reason, requeued_from, start, end) and the tails of the tasks' SLURM
    logs: what an assertion shows when a run on a scheduler went another way."""
    lines = [f"{t.number} {t.state.name} {t.user_attrs.get('status')} {t.user_attrs.get('reason')} "
             f"from={t.system_attrs.get('dse:requeued_from')} {t.datetime_start} {t.datetime_complete}"
             for t in final.values()]
    for log in sorted((run_dir / "slurm").glob("*_log.*")):
        lines += [f"--- {log.name}", log.read_text(errors="replace")[-2500:]]
    return "\n".join(lines)


def test_sqlite_is_refused_unless_the_file_system_is_shared(tmp_path):
    """One line, exit 2, nothing submitted (no SLURM needed: the check comes first)."""
    proc = subprocess.run([sys.executable, "-m", "dse.search", *FAST, f"run_dir={tmp_path / 'r'}",
                           "launcher=slurm"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: storage: SQLite") and "launcher.shared_fs=true" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r" / "slurm").exists()


@pytest.mark.parametrize("key,value,words", [("nodes", "0", "integer >= 1"), ("wait", "maybe", "true or false"),
                                             ("mem_gb", "-1", "number > 0")])
def test_bad_launcher_values_name_the_key(key, value, words):
    """A bad launcher value is a UserError naming launcher.<key> and what it takes."""
    with pytest.raises(UserError, match=f"launcher.{key}: must be .*{words}"):
        slurm.config({"name": "slurm", key: {"0": 0, "maybe": "maybe", "-1": -1}[value]})


def test_task_command_runs_locally_with_the_storage_in_the_environment(tmp_path):
    """A task runs launcher=local workers=auto in its own run_dir; the storage password is not in its command."""
    argv = slurm.task_argv(["space=resnext", "storage=postgresql://u:secret@h/db", "launcher=slurm",
                            "launcher.nodes=4", "run_dir=x"], tmp_path, 3)
    assert "secret" not in " ".join(argv) and "launcher=local" in argv and "workers=auto" in argv
    assert f"run_dir={tmp_path.resolve() / 'tasks' / '3'}" in argv and "launcher.nodes=4" not in argv


SAME_TERM = """
import os, signal, sys, time
from dse.trials import signals
signals.install()
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGTERM)  # scancel reaches a pool worker directly and through its parent
time.sleep(0.2)
print("stopping once", signals.exit_code())
time.sleep(signals.SAME_TERM_S + 0.2)
os.kill(os.getpid(), signal.SIGTERM)  # a later one is a second signal: abort
print("not reached")
"""


def test_a_sigterm_that_arrives_twice_at_once_is_one_request():
    """Two SIGTERMs at once stop cleanly (exit 143); one after SAME_TERM_S aborts as a second signal."""
    proc = subprocess.run([sys.executable, "-c", SAME_TERM], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.split("\n")[0] == "stopping once 143" and "not reached" not in proc.stdout
    assert proc.returncode == 143 and "second signal: aborting now" in proc.stderr


def test_a_squeue_that_cannot_reach_the_controller_is_not_a_finished_job(slurm_cluster, tmp_path, monkeypatch):
    """queued() reads only squeue's "Invalid job id" as a job that is gone. A controller that does not answer
    (here: a real squeue pointed at a port nobody listens on) keeps the job held, so the launcher's follow and
    the tests' wait_gone keep waiting. Before, any squeue failure read as "gone": under load a socket timeout
    let test_scancel_and_requeue_mid_trial read the study before the requeued task ran (CI, 2026-12-07)."""
    import socket

    from conftest import SLURM_CONF

    assert slurm.queued("999999") == []  # the live controller: an unknown job is gone
    with socket.socket() as sock:  # a free port, closed again: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=socket.gethostname(), root=tmp_path, ctld_port=port, d_port=port + 1)
                    + "MessageTimeout=1\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    held = slurm.queued("5")  # 3 tries, 2 s apart
    assert len(held) == 1 and held[0].startswith("? (squeue: ") and "controller" in held[0], held
