"""A killed trial is failed and retried at once by the next dse process on its host (dse/trials/owners.py), not after
the heartbeat grace, and also on a journal storage (no heartbeats); live owners and other hosts are left alone.

The crash tests run a real `python -m dse.search` with the heartbeat at its default (30 s, stale after 90 s): trial 0
trains, trial 1 is SIGKILLed mid-trial and the command starts again at once: only the owner check can save the killed
trial, and the trial trained before the kill is kept. (The SQLite one also holds what test_crash.py's
test_sigkill_mid_trial_then_resume_sqlite checked: the same kill and resume, with 1-second heartbeats.)
"""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from crash_helpers import ROOT, command, env, ok, trials, wait_running

from dse.trials import owners
CHEAP = ["trainer.limit_batches=1", "model.width_scale=0.125", "data.subset=128", "data.val_subset=64",
         "trainer.threads=1"]


def _kill_mid_trial_and_rerun(tmp_path, storage: str | None, name: str):
    """Trial 0 trains, trial 1 sleeps in training and is SIGKILLed; the same command runs again at once:
    (trials, victim, pid)."""
    run_dir = tmp_path / name
    extra = ([f"storage={storage}"] if storage else []) + CHEAP
    url = storage or f"sqlite:///{run_dir / 'study.db'}"
    slow = {**env(DSE_TEST_FAULT="sleep=120:2"), "DSE_HEARTBEAT": "30,90"}
    proc = subprocess.Popen(command(run_dir, name, 2, *extra), cwd=ROOT, env=slow, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        victim = wait_running(url, name, at_least_complete=1, timeout=90)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    rerun = subprocess.run(command(run_dir, name, 2, *extra), cwd=ROOT, env={**env(), "DSE_HEARTBEAT": "30,90"},
                           capture_output=True, text=True, timeout=240)
    ok(rerun)
    return trials(url, name), victim, proc.pid


def _assert_reaped_and_rerun(got, victim, pid):
    assert [t.number for t in got if t.state.name == "RUNNING"] == []
    dead = next(t for t in got if t.number == victim.number)
    assert dead.state.name == "FAIL" and dead.user_attrs["reason"] == "worker died (process gone)"
    trained = [t for t in got if t.user_attrs.get("status") not in ("rejected", "duplicate")]  # over budget: cheap
    assert [t.state.name for t in trained if t.number < victim.number] == ["COMPLETE"]  # done before the kill: kept
    again = [t for t in got if t.system_attrs.get("failed_trial") == victim.number]
    assert [t.state.name for t in again] == ["COMPLETE"] and again[0].params == victim.params  # the point re-ran
    assert len(trained) == 3  # the kept one, the killed one, its re-run: nothing else trained
    assert again[0].system_attrs[owners.KEY]["trial"] == again[0]._trial_id  # its own owner, not the dead one's
    assert not [t for t in got if t.state.name == "WAITING"]
    assert dead.system_attrs[owners.KEY]["pid"] == pid  # marked by the process that was killed


def test_killed_trial_is_retried_at_once_on_restart_sqlite(tmp_path):
    _assert_reaped_and_rerun(*_kill_mid_trial_and_rerun(tmp_path, None, "own_sqlite"))


def test_killed_trial_is_retried_at_once_on_restart_journal(tmp_path):
    _assert_reaped_and_rerun(*_kill_mid_trial_and_rerun(tmp_path, f"journal:{tmp_path / 'j' / 'study.log'}",
                                                        "own_journal"))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _running(study, owner: dict) -> int:
    """A RUNNING trial of `study` owned by `owner`; its number."""
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, owners.KEY, {**owner, "trial": trial._trial_id})
    return trial.number


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_reap_spares_live_owners_and_other_hosts(tmp_path, sleeper, kind):
    import optuna

    from dse.storage import open_storage

    url = f"sqlite:///{tmp_path / 'o.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'o.log'}"
    study = optuna.create_study(study_name="o", storage=open_storage(url, tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_owner = owners.identity(gone.pid)
    gone.wait()
    me = _running(study, owners.identity())  # the test process itself
    asleep = _running(study, owners.identity(sleeper.pid))  # a live subprocess
    elsewhere = _running(study, {**gone_owner, "host": "another-host.example"})  # a dead pid, another host
    reused = _running(study, {**owners.identity(sleeper.pid), "start": owners.identity(sleeper.pid)["start"] - 1})
    dead = _running(study, gone_owner)
    inherited = _running(study, gone_owner)  # a re-queued copy that carries the dead trial's owner record
    study._storage.set_trial_system_attr(study.trials[inherited]._trial_id, owners.KEY,
                                         {**gone_owner, "trial": -1})
    plain = study.ask().number  # no owner record (e.g. popped, not yet marked): left to the heartbeat

    assert owners.reap(study) == 2
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    assert {n: states[n] for n in (me, asleep, elsewhere, inherited, plain)} == dict.fromkeys(
        (me, asleep, elsewhere, inherited, plain), "RUNNING")
    assert states[dead] == states[reused] == "FAIL"
    retries = sorted(t.system_attrs["failed_trial"] for t in study.get_trials(deepcopy=False)
                     if t.state.name == "WAITING")
    assert retries == sorted([dead, reused]) and owners.reap(study) == 0  # reaped once, re-queued once
