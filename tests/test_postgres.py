"""Many workers on a real PostgreSQL server (tests/conftest.py starts one on loopback; CI requires it)."""
from __future__ import annotations

import pytest

from grid_helpers import per_cell, run_pool

LABELS = [f"c{i}" for i in range(5)]


def test_postgres_four_workers_grid_exactly_once_after_sigkill(fresh_postgres_db, tmp_path):
    codes = run_pool(fresh_postgres_db, "g", LABELS, 2, 4, tmp_path, sleep_s=1.0, kill_one=True)
    assert codes[0] == -9 and codes[1:] == [0, 0, 0], [(tmp_path / f"w{i}.log").read_text()[-500:] for i in range(4)]
    done, trials = per_cell(fresh_postgres_db, "g")
    assert set(done) == {(label, s) for label in LABELS for s in range(2)} and max(done.values()) == 1
    dead = [t for t in trials if t.state.name == "FAIL"]
    assert len(dead) == 1 and dead[0].user_attrs["reason"] == "worker died (heartbeat)"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead[0].number]
    assert [t.state.name for t in retried] == ["COMPLETE"] and retried[0].params == dead[0].params


@pytest.mark.slow
def test_postgres_search_sigkill_mid_trial_then_resume(fresh_postgres_db, tmp_path):
    from crash_helpers import QUICK, kill_and_resume

    got, victim, rerun = kill_and_resume(tmp_path, fresh_postgres_db, "pg_kill", *QUICK)
    dead = next(t for t in got if t.number == victim.number)
    assert dead.state.name == "FAIL" and dead.user_attrs["reason"] == "worker died (process gone)"  # dse.trials.owners
    assert next(t for t in got if t.number == 0).state.name in ("COMPLETE", "PRUNED")  # kept
    again = [t for t in got if t.system_attrs.get("failed_trial") == victim.number]
    assert [t.state.name for t in again] == ["COMPLETE"] and again[0].params == victim.params
    password = fresh_postgres_db.split(":")[2].split("@")[0]
    assert password not in rerun.stdout + rerun.stderr
