"""Results a researcher can trust (issue 11): provenance on resume, what samplers learn from, seeds.

Each test failed before its fix: a resume with another recipe was accepted silently; over-budget points were
PRUNED (NSGA-II reads COMPLETE trials only) and used up TPE's random start-up trials; a repeated point was a
second COMPLETE trial; `study.seeds` did nothing outside grid studies.
"""
from __future__ import annotations

import statistics

import optuna
import pytest

from search_helpers import load_study, ok, read_csv, search_here

pytestmark = pytest.mark.filterwarnings("ignore")
# Not about sizing: skip the measurement a fresh default study makes to size its data (study.trials_per_timeout,
# tested in tests/test_provenance_outputs.py and test_timeout.py); on a loaded 2-core machine it was a quarter of a run.
UNSIZED = "study.trials_per_timeout=null"
TIGHT = ["space=resnext", "study.constraints.flops.max=1.5e6", UNSIZED]  # ~7% of the space at 16 px


def trials_of(tmp_path, name):
    return load_study(tmp_path / "runs" / name, name).trials


def test_resume_with_other_settings_is_refused_then_allowed(tmp_path):
    ok(search_here("space=resnext", UNSIZED, "study.n_trials=1", "study.name=p", cwd=tmp_path))
    config = (tmp_path / "runs/p/config.yaml").read_text()
    proc = search_here("space=resnext", UNSIZED, "study.n_trials=2", "study.name=p", "trainer.lr=0.2", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "trainer.lr: 0.05 -> 0.2" in proc.stderr and "study.allow_changes=true" in proc.stderr
    assert len(trials_of(tmp_path, "p")) == 1  # nothing written to the storage
    assert (tmp_path / "runs/p/config.yaml").read_text() == config
    ok(search_here("space=resnext", UNSIZED, "study.n_trials=2", "study.name=p", "trainer.lr=0.2",
                   "study.allow_changes=true", cwd=tmp_path))
    lrs = [t.user_attrs["settings"]["trainer"]["lr"] for t in trials_of(tmp_path, "p")
           if t.user_attrs.get("status") == "ok"]
    assert lrs == [0.05, 0.2]  # each trial says what it was trained with
    assert (tmp_path / "runs/p/config.1.yaml").read_text() == config  # the first run's config is kept


def test_over_budget_points_are_infeasible_complete_trials(tmp_path):
    ok(search_here(*TIGHT, "study.n_trials=1", "study.name=r", cwd=tmp_path))
    storage = f"sqlite:///{tmp_path / 'runs/r/study.db'}"
    study = optuna.load_study(study_name="r", storage=storage)
    study.enqueue_trial({"depth": 29, "cardinality": 16, "bottleneck_width": 16, "width": 128})  # far over
    ok(search_here(*TIGHT, "study.n_trials=2", "study.name=r", cwd=tmp_path))
    study = optuna.load_study(study_name="r", storage=storage)
    rejected = [t for t in study.trials if t.user_attrs.get("status") == "rejected"]
    assert rejected and all(t.state.name == "COMPLETE" for t in rejected)
    assert all(max(t.constraints.values()) > 0 and t.values[0] == 0.0 for t in rejected)
    assert rejected[0].values[1] == rejected[0].user_attrs["flops"]
    seen_by_nsga2 = study._get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    assert {t.number for t in rejected} <= {t.number for t in seen_by_nsga2}
    assert not {t.number for t in rejected} & {t.number for t in study.best_trials}  # infeasible: not a best
    rows = {int(r["number"]): r for r in read_csv(tmp_path / "runs/r/trials.csv")}
    assert all(rows[t.number]["accuracy"] == "" for t in rejected)
    assert all(int(r["number"]) not in {t.number for t in rejected} for r in read_csv(tmp_path / "runs/r/pareto.csv"))


def test_start_up_trials_are_drawn_inside_the_budget(tmp_path):
    ok(search_here(*TIGHT, "sampler=tpe", "sampler.n_startup_trials=6", "study.n_trials=6", "study.name=s",
                   cwd=tmp_path))
    trials = trials_of(tmp_path, "s")
    assert sum(t.user_attrs.get("status") == "ok" for t in trials) == 6
    assert not [t for t in trials if t.user_attrs.get("status") == "rejected"]  # ~93% were rejected before


def test_a_repeated_point_is_not_a_second_result(tmp_path):
    ok(search_here(*TIGHT, "study.n_trials=1", "study.name=d", cwd=tmp_path))
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{tmp_path / 'runs/d/study.db'}")
    first = study.trials[0]
    study.enqueue_trial(first.params)
    ok(search_here(*TIGHT, "study.n_trials=2", "study.name=d", cwd=tmp_path))
    again = [t for t in trials_of(tmp_path, "d") if t.user_attrs.get("status") == "duplicate"]
    assert len(again) == 1 and again[0].state.name == "FAIL" and again[0].values is None
    assert again[0].user_attrs["duplicate_of"] == first.number and "train_seconds" not in again[0].user_attrs
    assert again[0].number not in {t.number for t in load_study(tmp_path / "runs/d", "d").best_trials}


def test_seeds_train_a_sampled_point_several_times(tmp_path):
    ok(search_here("space=resnext", UNSIZED, "study.n_trials=2", "study.seeds=3", "study.name=n", cwd=tmp_path))
    done = [t for t in trials_of(tmp_path, "n") if t.user_attrs.get("status") == "ok"]
    assert len(done) == 2
    for t in done:
        accs = t.user_attrs["val_accs"]
        assert len(accs) == 3 and t.user_attrs["seeds"] == 3
        assert t.user_attrs["val_acc"] == pytest.approx(statistics.fmean(accs))
        assert t.user_attrs["val_acc_std"] == pytest.approx(statistics.stdev(accs))
        assert t.values[0] == pytest.approx(statistics.fmean(accs))
    rows = [r for r in read_csv(tmp_path / "runs/n/trials.csv") if r["status"] == "ok"]
    assert all(r["val_acc_std"] != "" and r["seeds"] == "3" for r in rows)


def test_a_setting_that_does_not_change_training_never_blocks_a_resume():
    # A study made while trainer.compile was still recorded must resume after it became a speed-only setting.
    from dse import provenance
    old = {"trainer": {"lr": 0.1, "compile": "auto"}, "data": {"subset": 5000}}
    assert provenance.differences(old, {"trainer": {"lr": 0.1}, "data": {"subset": 5000}}) == []
    assert provenance.differences(old, {"trainer": {"lr": 0.2}, "data": {"subset": 5000}}) == ["trainer.lr: 0.1 -> 0.2"]
