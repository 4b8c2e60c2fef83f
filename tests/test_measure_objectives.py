"""Activations, receptive field and measured latency as study objectives and constraints (issue 10, part 4):
every trial records them, a constraint on acts rejects points the analytic count puts over it, and a
latency objective is measured once per point and cached."""
from __future__ import annotations

import pytest

from dse.cost import measures
from dse.point import Point
from search_helpers import load_study, ok, read_csv, search

pytestmark = pytest.mark.filterwarnings("ignore")


def test_acts_objective_and_constraint(tmp_path):
    proc = ok(search("space=resnext", "study.n_trials=3", "study.name=a", "study.objectives=[accuracy,acts]",
                     "+study.constraints.acts.max=4e5", "study.constraints.flops.max=1e9", cwd=tmp_path))
    trials = load_study(tmp_path / "runs/a", "a").trials
    assert trials and all(t.user_attrs.get("acts") is not None for t in trials if "point" in t.user_attrs)
    for t in trials:
        if "point" not in t.user_attrs:
            continue
        counted = measures(Point.from_dict(t.user_attrs["point"]))
        assert (t.user_attrs["acts"], t.user_attrs["rf"], t.user_attrs["rf_stride"]) == \
            (counted.acts, counted.rf, counted.rf_stride)  # recorded = the analytic count of the trained geometry
        if counted.acts > 4e5:
            assert t.user_attrs["status"] == "rejected" and t.constraints["acts.max"] > 0
        if t.user_attrs.get("status") == "ok":
            assert t.values[1] == counted.acts  # the second objective is the activation count
    rows = read_csv(tmp_path / "runs/a/trials.csv")
    assert "acts" in rows[0] and "rf" in rows[0]
    assert "rejected" in proc.stdout or all(r["status"] == "ok" for r in rows)


def test_unknown_constraint_names_the_valid_ones(tmp_path):
    proc = search("space=resnext", "study.n_trials=1", "study.name=b", "+study.constraints.latency.max=3",
                  cwd=tmp_path)
    assert proc.returncode != 0 and "study.constraints: unknown key 'latency'; valid: flops, params, acts, rf" \
        in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs/b/study.db").exists()


def test_latency_objective_is_measured_and_cached(tmp_path):
    ok(search("space=resnext", "study.n_trials=2", "study.name=c", "study.objectives=[accuracy,latency]",
              cwd=tmp_path))
    study = load_study(tmp_path / "runs/c", "c")
    done = [t for t in study.trials if t.user_attrs.get("status") == "ok"]
    assert done and all(t.user_attrs["latency_ms"] > 0 and t.values[1] == t.user_attrs["latency_ms"] for t in done)
    cache = {k: v for k, v in study._storage.get_study_system_attrs(study._study_id).items()
             if k.startswith("dse:latency:")}
    assert {t.user_attrs["point_id"] for t in done} <= {k.rsplit(":", 1)[1] for k in cache}
