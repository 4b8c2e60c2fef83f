"""Two processes change one trial's state at once, on SQLite: exactly one change wins.

Forced interleaving, no mock: a third connection holds SQLite's write lock (BEGIN IMMEDIATE) while two storages,
each with its own connection, start the same change; then it lets go. Before dse.storage ran each change under
the write lock, both read the old state, both wrote, and both succeeded: two workers popped one grid cell (one
of them then died on its COMPLETE), and two workers failed one dead trial and queued two retries of it, so the
cell trained twice (tests/test_pool.py's SIGKILL grid, 1 run in 3 under load).
"""
from __future__ import annotations

import sqlite3
import threading
import time
import warnings

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from dse.storage import HEARTBEAT_REASON, open_storage

HOLD_S = 1.0  # the lock is held this long: both changes have read the old state and wait to write


def _study(tmp_path, state: TrialState):
    """(url, db path, trial id) of a study with one trial in `state` (WAITING, or RUNNING with a heartbeat)."""
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, tmp_path))
    study.enqueue_trial({"x": 1.0})
    trial_id = study.get_trials(deepcopy=False)[0]._trial_id
    if state == TrialState.RUNNING:
        assert study._storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        study._storage.record_heartbeat(trial_id)
    return url, db, trial_id


def _at_once(db, calls) -> list:
    """Run each call in its own thread while the write lock is held; what each returned (or 'refused')."""
    out = [None] * len(calls)

    def run(i, call):
        try:
            out[i] = call()
        except UpdateFinishedTrialError:
            out[i] = "refused"

    blocker = sqlite3.connect(db, timeout=60, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    time.sleep(HOLD_S)
    blocker.execute("ROLLBACK")
    for t in threads:
        t.join(timeout=120)
    blocker.close()
    return out


def _storages(url, tmp_path, n=2):
    """n storages on one URL, each its own engine and connection (as n worker processes have)."""
    return [open_storage(url, tmp_path) for _ in range(n)]


def _age_beat(db, tid: int) -> None:
    """Make trial `tid`'s last heartbeat older than any grace period."""
    with sqlite3.connect(db) as con:
        con.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00' WHERE trial_id = ?", (tid,))


def _found_stale(tmp_path):
    """(owner's storage, reaper's storage, trial id): a RUNNING trial whose beat is old, found stale by the reaper."""
    url, db, tid = _study(tmp_path, TrialState.RUNNING)
    _age_beat(db, tid)
    owner, reaper = _storages(url, tmp_path)
    study = optuna.load_study(study_name="s", storage=reaper)
    assert reaper._get_stale_trial_ids(study._study_id) == [tid]
    return owner, reaper, tid


def test_two_pops_of_one_waiting_trial_one_gets_it(tmp_path):
    url, db, tid = _study(tmp_path, TrialState.WAITING)
    a, b = _storages(url, tmp_path)
    got = _at_once(db, [lambda: a.set_trial_state_values(tid, TrialState.RUNNING),
                        lambda: b.set_trial_state_values(tid, TrialState.RUNNING)])
    assert sorted(got) == [False, True]


def test_complete_and_fail_of_one_running_trial_one_wins(tmp_path):
    url, db, tid = _study(tmp_path, TrialState.RUNNING)
    a, b = _storages(url, tmp_path)
    got = _at_once(db, [lambda: a.set_trial_state_values(tid, TrialState.COMPLETE, [0.5]),
                        lambda: b.set_trial_state_values(tid, TrialState.FAIL)])
    assert sorted(map(str, got)) == ["True", "refused"]
    final = a.get_trial(tid)
    assert final.state == (TrialState.COMPLETE if got[0] is True else TrialState.FAIL)
    assert final.values == ([0.5] if got[0] is True else None)


def test_two_workers_fail_one_stale_trial_one_retry_is_queued(tmp_path):
    """Both find the dead worker's trial stale; one fails it and queues its retry, the other is refused."""
    url, db, tid = _study(tmp_path, TrialState.RUNNING)
    _age_beat(db, tid)  # its worker died long ago: the last beat is old
    studies = [optuna.load_study(study_name="s", storage=s) for s in _storages(url, tmp_path)]

    def reap(study):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)

    _at_once(db, [lambda: reap(studies[0]), lambda: reap(studies[1])])
    trials = studies[0].get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["reason"] == HEARTBEAT_REASON
    assert trials[1].system_attrs["fixed_params"] == {"x": 1.0}  # the retry of the same point


def test_a_trial_that_beats_again_before_the_takeover_is_not_taken(tmp_path):
    """A slow but live worker: found stale, then its heartbeat lands before the FAIL does; it keeps its trial."""
    owner, reaper, tid = _found_stale(tmp_path)
    owner.record_heartbeat(tid)
    assert reaper.set_trial_state_values(tid, TrialState.FAIL) is False
    trial = owner.get_trial(tid)
    assert trial.state == TrialState.RUNNING and "reason" not in trial.user_attrs
    assert owner.set_trial_state_values(tid, TrialState.COMPLETE, [1.0])


@pytest.mark.parametrize("first", ["owner", "reaper"])
def test_the_loser_of_a_takeover_writes_nothing(tmp_path, first):
    """Owner's COMPLETE against the heartbeat's FAIL of the same trial, in both orders: the second is refused
    and leaves the winner's state, values and reason as they were."""
    owner, reaper, tid = _found_stale(tmp_path)
    steps = {"owner": lambda: owner.set_trial_state_values(tid, TrialState.COMPLETE, [1.0]),
             "reaper": lambda: reaper.set_trial_state_values(tid, TrialState.FAIL)}
    assert steps[first]() is True
    second = "reaper" if first == "owner" else "owner"
    if second == "owner":
        with pytest.raises(UpdateFinishedTrialError):
            steps[second]()
    else:
        assert steps[second]() is False  # no longer RUNNING: not stale, nothing written
    trial = owner.get_trial(tid)
    assert trial.state == (TrialState.COMPLETE if first == "owner" else TrialState.FAIL)
    assert trial.values == ([1.0] if first == "owner" else None)
    assert trial.user_attrs.get("reason") == (None if first == "owner" else HEARTBEAT_REASON)


@pytest.mark.parametrize("how", ["popped", "asked"])
def test_a_worker_killed_before_its_first_beat_is_taken_for_dead(tmp_path, how):
    """Killed right after it took a trial (a queued grid cell, or a fresh trial of a sampled study) and before
    its trial function ran: Optuna's heartbeat never began, so the trial stayed RUNNING for good and the other
    grid workers waited for it for ever. Now the trial beats from the moment it is RUNNING."""
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, tmp_path))
    if how == "popped":
        study.enqueue_trial({"x": 1.0})
        tid = study.get_trials(deepcopy=False)[0]._trial_id
        assert study._storage.set_trial_state_values(tid, TrialState.RUNNING)  # Optuna's pop; then SIGKILL
    else:
        tid = study._storage.create_new_trial(study._study_id)  # study.ask()'s trial; then SIGKILL
    _age_beat(db, tid)  # the grace period passes
    other = optuna.load_study(study_name="s", storage=open_storage(url, tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(other)
    trials = other.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["reason"] == HEARTBEAT_REASON
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]  # its retry
