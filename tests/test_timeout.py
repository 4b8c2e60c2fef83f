"""A study that keeps its timeout (issue 13): the trial in flight stops and is queued again instead of
overrunning, and trials are sized to the machine's measured speed.

Before: Optuna checked study.timeout only between trials, so `study.timeout=60` ran 240 s; the default
study trained one point in nine minutes on a busy machine.
"""
from __future__ import annotations

import time

import optuna
import pytest

from dse import sizing
from search_helpers import load_study, ok, search_here

pytestmark = pytest.mark.filterwarnings("ignore")
LONG = ["space=resnext", "trainer.max_epochs=3000", "trainer.limit_batches=4"]  # thousands of steps


def test_the_trial_in_flight_stops_at_the_timeout_and_runs_on_resume(tmp_path):
    start = time.monotonic()
    proc = search_here(*LONG, "study.n_trials=1", "study.timeout=20", "study.name=t", cwd=tmp_path)
    took = time.monotonic() - start
    assert took < 20 + 15, f"ran {took:.0f}s for a 20 s timeout"
    assert proc.returncode == 1 and "stopped at the timeout and queued again" in proc.stderr
    trials = load_study(tmp_path / "runs/t", "t").trials
    stopped = [t for t in trials if t.state.name == "FAIL"]
    queued = [t for t in trials if t.state.name == "WAITING"]
    assert len(stopped) == 1 and stopped[0].user_attrs["reason"] == "out of time"
    assert len(queued) == 1 and queued[0].params == stopped[0].params  # the same point, queued again
    assert not [t for t in trials if t.state.name == "RUNNING"]
    ok(search_here("space=resnext", "trainer.max_epochs=3000", "trainer.limit_batches=4", "study.n_trials=1",
                   "study.name=t", "trainer.max_epochs=2", "study.allow_changes=true", cwd=tmp_path))
    done = [t for t in load_study(tmp_path / "runs/t", "t").trials if t.user_attrs.get("status") == "ok"]
    assert len(done) == 1 and done[0].params == stopped[0].params  # the resumed run trained it first


def test_subset_for_a_hand_computed_budget():
    # 2 ms per sample, 60 s per trial, 2 epochs, 1,000 validation samples:
    # 60 - 4 overhead - 2 * 1000 * 0.002 / 3 = 54.67 s of training -> 54.67 / (2 * 0.002) = 13,666 -> 13,500
    assert sizing.subset_for(0.002, 60.0, 2, 1000, 20000) == 13500
    assert sizing.subset_for(0.002, 600.0, 2, 1000, 20000) == 20000  # never above the configured size
    assert sizing.subset_for(0.5, 60.0, 2, 1000, 20000) == 1000  # a floor, however slow the machine


def test_a_fresh_study_is_sized_once_and_a_resume_reuses_the_size(tmp_path):
    args = ["space=resnext", "study.n_trials=1", "study.timeout=100", "study.trials_per_timeout=4",
            "study.name=z"]
    first = ok(search_here(*args, cwd=tmp_path, fast=False))  # Fashion-MNIST at its proxy size (20k)
    assert "ms per training sample measured" in first.stdout
    study = load_study(tmp_path / "runs/z", "z")
    size = study.user_attrs["dse:settings"]["data"]["subset"]
    assert 1000 <= size <= 20000
    assert study.trials[0].user_attrs["settings"]["data"]["subset"] == size
    again = ok(search_here(*args[:1], "study.n_trials=2", *args[2:], cwd=tmp_path, fast=False))
    assert f"sizing: {size} training samples, as this study was sized when it began" in again.stdout
    assert "measured" not in again.stdout
