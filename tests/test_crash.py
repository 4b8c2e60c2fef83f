"""Crash safety of `python -m dse.search` (subprocesses, SQLite): SIGKILL, SIGTERM, NaN and OOM trials.

Faults come from the documented test hook DSE_TEST_FAULT (dse/train/faults.py). There is no GPU here: the OOM is
torch.cuda.OutOfMemoryError raised inside the first training step, which is what CUDA raises. SIGKILL mid-trial and
resume on SQLite: tests/test_owners.py (test_killed_trial_is_retried_at_once_on_restart_sqlite); on PostgreSQL:
tests/test_postgres.py.
"""
from __future__ import annotations

import signal
import time

import pytest

from crash_helpers import QUICK, ok, search, start, trials, wait_running


def test_nan_and_oom_trials_get_reasons_and_the_study_goes_on(tmp_path):
    proc = search(tmp_path / "r", "faults", 3, *QUICK, DSE_TEST_FAULT="nan:1;oom:2")
    ok(proc)
    got = sorted(trials(f"sqlite:///{tmp_path / 'r' / 'study.db'}", "faults"), key=lambda t: t.number)
    assert [t.user_attrs.get("status") for t in got] == ["diverged", "oom", "ok"]
    assert [t.state.name for t in got] == ["FAIL", "FAIL", "COMPLETE"]
    assert got[0].user_attrs["reason"].startswith("diverged") and got[1].user_attrs["reason"].startswith("oom")
    rows = (tmp_path / "r" / "trials.csv").read_text()
    assert "diverged" in rows and "oom" in rows


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_rerun_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'r' / 'study.db'}"
    proc = start(tmp_path / "r", "term", 2, *QUICK, DSE_TEST_FAULT="sleep=60:2")
    victim = wait_running(url, "term", at_least_complete=1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and time.monotonic() - sent < 30, err[-2000:]
    assert "re-run the command to resume" in err and "Traceback" not in err
    got = trials(url, "term")
    states = {t.number: t.state.name for t in got}
    assert "RUNNING" not in states.values()  # consistent: nothing left half-done
    assert states[victim.number] == "FAIL"
    assert next(t for t in got if t.number == victim.number).user_attrs["reason"] == "interrupted"
    queued = [t for t in got if t.state.name == "WAITING"]
    assert len(queued) == 1 and queued[0].params == victim.params
    assert (tmp_path / "r" / "trials.csv").is_file()
    rerun = search(tmp_path / "r", "term", 2, *QUICK)
    ok(rerun)
    got = trials(url, "term")
    assert any(t.state.name == "COMPLETE" and t.params == victim.params for t in got)  # the interrupted point re-ran
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in got) == 2
    assert not [t for t in got if t.state.name in ("WAITING", "RUNNING")]
