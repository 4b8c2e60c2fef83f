"""Fewer storage round trips per trial, same guarantees: the owner record rides in the transaction that makes a
trial, and the look for stale trials runs at most once per heartbeat interval. Real SQLite and PostgreSQL."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import optuna
import pytest
from sqlalchemy import event
from optuna.trial import TrialState

from dse.storage import open_storage
from dse.trials import owners

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    return request.getfixturevalue("fresh_postgres_db")


class Writes:
    """Counts the INSERT/UPDATE/DELETE statements an engine runs while entered."""

    def __init__(self, storage):
        self.engine = storage._backend.engine if hasattr(storage, "_backend") else storage.engine
        self.n = 0

    def _count(self, conn, cursor, statement, *args):
        self.n += statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._count)


def _study(url, tmp_path):
    storage = optuna.storages.get_storage(open_storage(url, tmp_path))  # with Optuna's cache, as optimize has it
    return optuna.create_study(study_name="r", storage=storage)


def test_a_processes_later_trials_carry_their_owner_from_creation(url, tmp_path):
    study = _study(url, tmp_path)
    first = study.ask()
    with Writes(study._storage) as w:
        owners.mark(first)  # the first trial: written apart, as before
    assert w.n == 1
    second = study.ask()
    with Writes(study._storage) as w:
        owners.mark(second)
    assert w.n == 0  # nothing left to write: the owner came with the trial
    fresh = open_storage(url, tmp_path)  # another process's view: the database, not this process's cache
    owner = fresh.get_trial(second._trial_id).system_attrs[owners.KEY]
    assert owner["trial"] == second._trial_id and owner["pid"] == os.getpid()
    assert owner["host"] == socket.gethostname()
    assert owners.state(owner, second._trial_id) == "live"
    enqueued = study.enqueue_trial({"x": 1.0}) or study.get_trials(deepcopy=False)[-1]  # a WAITING copy: no owner
    assert owners.KEY not in fresh.get_trial(enqueued._trial_id).system_attrs


def test_a_worker_killed_between_making_a_trial_and_marking_it_is_reaped_at_once(url, tmp_path):
    """The process marks one trial, then makes another and dies before its trial function runs: the next process
    on this host fails that trial and queues it again at once (before this change it had no owner, so only the
    heartbeat's grace period, 90 s, could end it)."""
    code = textwrap.dedent(f"""
        import os, optuna
        from dse.storage import open_storage
        from dse.trials import owners
        storage = optuna.storages.get_storage(open_storage({url!r}, {str(tmp_path)!r}))
        study = optuna.create_study(study_name="r", storage=storage)
        first = study.ask()
        owners.mark(first)
        study.tell(first, 1.0)
        study.ask()  # made, then killed before the trial function marks it
        os._exit(9)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr[-2000:]
    study = optuna.load_study(study_name="r", storage=open_storage(url, tmp_path))
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert owners.reap(study) == 1
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["reason"] == owners.REASON


def _fail_stale(study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


def test_stale_trials_are_looked_for_at_most_once_per_heartbeat_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("DSE_HEARTBEAT", "30,60")
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="r", storage=open_storage(url, tmp_path))
    storage = study._storage._backend  # under Optuna's cache
    queries = []
    event.listen(storage.engine, "before_cursor_execute",
                 lambda *a: queries.append(a[2]) if "trial_heartbeats" in a[2] or "FROM trials" in a[2] else None)
    _fail_stale(study)
    looked = len(queries)
    assert looked >= 1
    tid = storage.create_new_trial(study._study_id)  # a worker that dies at once: its beat ages
    with storage.engine.begin() as con:
        con.exec_driver_sql("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00' WHERE trial_id = ?",
                            (tid,))
    queries.clear()
    _fail_stale(study)  # within the interval: no query, nothing failed yet
    assert queries == [] and storage.get_trial(tid).state == TrialState.RUNNING
    storage._looked[study._study_id] -= 30  # one heartbeat interval later
    _fail_stale(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # failed and queued again


class _Node:
    """An object in a reference cycle: only the cycle collector frees it."""

    def __init__(self):
        self.me = self


def _trained():
    return optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.5],
                                     user_attrs={"status": "ok", "point_id": "p", "val_acc": 0.5})


def test_collect_scans_the_older_objects_only_in_each_full_collection(monkeypatch):
    """After a full collection its survivors are frozen: a cycle made later is freed by the next collection, one
    that died among the frozen objects only by the next full one (every FULL_GC_EVERY-th)."""
    import gc
    import weakref

    from dse.trials import runner

    was = gc.isenabled()
    gc.disable()  # no automatic collection in between
    monkeypatch.setattr(runner, "_collects", 0)
    try:
        old = _Node()
        old_alive = weakref.ref(old)
        runner.collect(None, _trained())  # full: `old` survives it and is frozen
        assert gc.get_freeze_count() > 0
        young = _Node()
        young_alive = weakref.ref(young)
        del old, young
        runner.collect(None, _trained())  # a young collection
        assert young_alive() is None and old_alive() is not None
        monkeypatch.setattr(runner, "_collects", runner.FULL_GC_EVERY)
        runner.collect(None, _trained())  # full again
        assert old_alive() is None
    finally:
        gc.unfreeze()
        if was:
            gc.enable()


def test_the_screens_seed_noise_is_the_estimate_over_every_trained_trial():
    """The study line keeps its seed-noise estimate between trials and computes it again only when a point gets a
    second run: after each trial it equals dse.results.noise.estimate over all trained rows."""
    from dse.results import noise
    from dse.trials.screen import Screen

    screen = Screen([], None)
    rows = []
    for number, (point, acc, seeds, std) in enumerate([("a", 0.80, None, None), ("b", 0.70, None, None),
                                                       ("a", 0.82, None, None), ("c", 0.60, 3, 0.01),
                                                       ("d", 0.65, None, None), ("b", 0.69, None, None)]):
        attrs = {"status": "ok", "point_id": point, "val_acc": acc, "seeds": seeds, "val_acc_std": std}
        trial = optuna.trial.create_trial(state=TrialState.COMPLETE, values=[acc],
                                          user_attrs={k: v for k, v in attrs.items() if v is not None})
        trial.number = number
        screen.add(trial)
        rows.append({"number": number, "status": "ok", "point_id": point, "accuracy": acc, "seeds": seeds,
                     "val_acc_std": std})
        found = noise.estimate(rows)
        line = screen.study_line()
        assert (found is None) == ("seed noise" not in line)
        if found is not None:
            assert f"seed noise ±{100 * found.sigma:.2f} ({found.df} df)" in line
