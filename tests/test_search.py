"""End-to-end `python -m dse.search`: smoke runs on synthetic data and Fashion-MNIST (subprocesses), then resume,
every sampler, constraint rejection before training, grid studies and pruning through `dse.search.main` in this
process (same code path, without paying Lightning's import for every run). Real training throughout."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search_helpers import load_study, ok, read_csv, search, search_here

FMNIST = Path("/usr/share/datasets/fashion-mnist")
def trained(trials) -> list:
    """Trials (or a study's trials) that were trained: over-budget points are rejected without training."""
    trials = getattr(trials, "trials", trials)
    return [t for t in trials if t.user_attrs.get("status") not in ("rejected", "duplicate")]


# Tests of something other than sizing skip the measurement a fresh default study makes to size its data
# (study.trials_per_timeout; tests/test_provenance_outputs.py and test_timeout.py test it, and the smoke run and the
# resume here still make it): on a loaded 2-core machine it was a quarter of such a run.
UNSIZED = "study.trials_per_timeout=null"
RESULTS = ("study.db", "trials.csv", "pareto.csv", "pareto.png", "pareto.html", "best.yaml", "config.yaml")


def test_smoke_synthetic_writes_every_result(tmp_path):
    from dse.train.datasets import load

    data = load("synthetic")
    geometry = (data.image_size, data.in_chans)
    proc = ok(search("space=resnext", "study.n_trials=2", "study.name=s", cwd=tmp_path))
    run_dir = tmp_path / "runs" / "s"
    for name in RESULTS:
        assert (run_dir / name).is_file(), name
    assert not (tmp_path / "outputs").exists()  # Hydra leaves no outputs/ folder
    rows = [r for r in read_csv(run_dir / "trials.csv") if r["status"] not in ("rejected", "duplicate")]  # untrained
    assert len(rows) == 2
    for r in rows:
        assert r["state"] == "COMPLETE" and r["status"] == "ok", r
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and int(r["flops"]) > 0 and int(r["params"]) > 0
        assert abs(float(r["accuracy"]) + float(r["error"]) - 1.0) < 1e-9
        assert (int(r["point.image_size"]), int(r["point.in_chans"])) == geometry  # the data's, not the space's
    study = load_study(run_dir, "s")
    attrs = trained(study)[0].user_attrs
    for key in ("point", "point_id", "params", "flops", "status", "reason", "epochs", "train_seconds", "val_acc"):
        assert key in attrs, key
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["space"]["name"] == "resnext" and saved["study"]["n_trials"] == 2
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["front"] and all((run_dir / e["file"]).is_file() for e in best["front"])
    assert "study s: 2 trials" in proc.stdout


@pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_smoke_fashion_mnist(tmp_path):
    ok(search("space=resnext", "data=fashion_mnist", "study.n_trials=1", "study.name=f", UNSIZED, cwd=tmp_path))
    rows = [r for r in read_csv(tmp_path / "runs" / "f" / "trials.csv") if r["status"] not in ("rejected", "duplicate")]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and float(rows[0]["accuracy"]) > 0.0


def test_resume_runs_only_the_remainder(tmp_path):
    ok(search_here("space=resnext", "study.n_trials=2", "study.name=r", cwd=tmp_path))
    before = load_study(tmp_path / "runs/r", "r").trials
    first = {t.number: (t.datetime_complete, t.user_attrs["point_id"]) for t in before}
    proc = ok(search_here("space=resnext", "study.n_trials=3", "study.name=r", cwd=tmp_path))
    trials = load_study(tmp_path / "runs/r", "r").trials
    assert len(trained(trials)) == 3
    assert {t.number: (t.datetime_complete, t.user_attrs["point_id"]) for t in trials[:len(before)]} == first
    new = trained(trials[len(before):])
    assert len(new) == 1  # only the remainder was trained
    again = ok(search_here("space=resnext", "study.n_trials=3", "study.name=r", cwd=tmp_path))
    assert len(load_study(tmp_path / "runs/r", "r").trials) == len(trials)
    assert not [ln for ln in again.stdout.splitlines() if ln.startswith("trial ")]


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "grid"])
def test_each_sampler(tmp_path, sampler):
    ok(search_here("space=resnext", f"sampler={sampler}", "study.n_trials=2", f"study.name={sampler}", UNSIZED,
                   cwd=tmp_path))
    trials = trained(load_study(tmp_path / "runs" / sampler, sampler).trials)
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    if sampler == "grid":
        assert all("cell" in t.params for t in trials)
        assert len({t.params["cell"] for t in trials}) == 2


def test_a_budget_that_admits_nothing_stops_before_the_storage(tmp_path):
    """Issue 13: before, 21 points were proposed, rejected and stored, and the run exited 0 with an empty plot."""
    proc = search_here("space=resnext", "space.constraints.flops.max=1000", "study.n_trials=1", "study.name=c",
                       cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "none of 256 sampled points of space 'resnext' is within" in proc.stderr
    assert "flops <= 1e+03" in proc.stderr and "study.constraints.flops.max=" in proc.stderr
    assert not (tmp_path / "runs/c").exists()  # nothing written


def test_wrn_under_the_default_budget_stops_with_the_bound_and_the_override(tmp_path):
    proc = search_here("space=wrn", "study.n_trials=1", cwd=tmp_path, fast=False)  # Fashion-MNIST, as a user
    assert proc.returncode == 2 and "flops <= 1e+07" in proc.stderr
    assert "study.constraints.flops.max=1.1e+07" in proc.stderr  # the smallest WRN point has 10.55 MFLOPs
    assert not (tmp_path / "runs").exists()


def test_a_grid_whose_cells_all_break_the_budget_stops_before_running(tmp_path):
    proc = search_here("study=wrn_table4", "space=resnext", cwd=tmp_path, fast=False)
    assert proc.returncode == 2 and "all 10 grid cells are over the budget of space 'resnext'" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_study_that_trains_nothing_exits_non_zero(tmp_path):
    import os

    os.environ["DSE_TEST_FAULT"] = "nan"  # every fit diverges (see dse/train/faults.py)
    try:
        proc = search_here("space=resnext", "study.n_trials=2", "study.name=z", UNSIZED, cwd=tmp_path)
    finally:
        del os.environ["DSE_TEST_FAULT"]
    assert proc.returncode == 1 and "no trial was trained (2 proposed, 2 diverged)" in proc.stderr


def test_grid_study_runs_each_cell_times_seeds_once(tmp_path):
    study = tmp_path / "tiny_grid.yaml"
    study.write_text(yaml.safe_dump({
        "name": "tiny_grid", "seeds": 2, "objectives": ["accuracy", "params"],
        "grid": [{"label": "narrow", "point": {"stages": [{"block": "basic", "depth": 1, "width": 4}]}},
                 {"label": "wide", "point": {"stages": [{"block": "basic", "depth": 1, "width": 8}]}}]}))
    ok(search_here(f"study={study}", cwd=tmp_path))
    trials = load_study(tmp_path / "runs/tiny_grid", "tiny_grid").trials
    cells = sorted((t.params["cell"], t.params["seed"]) for t in trials)
    assert cells == [("narrow", 0), ("narrow", 1), ("wide", 0), ("wide", 1)]
    assert all(t.user_attrs.get("test_acc") is not None for t in trials)  # grids score the test set
    proc = ok(search_here(f"study={study}", cwd=tmp_path))
    assert len(load_study(tmp_path / "runs/tiny_grid", "tiny_grid").trials) == 4 and "trial 4" not in proc.stdout


def test_single_objective_with_pruner(tmp_path):
    ok(search_here("space=resnext", "study.objectives=[error]", "study.pruner=median", "study.n_trials=2",
              "study.name=p", UNSIZED, cwd=tmp_path))
    study = load_study(tmp_path / "runs/p", "p")
    assert len(study.directions) == 1 and study.directions[0].name == "MINIMIZE"
    assert len(trained(study.trials)) == 2 and {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    assert read_csv(tmp_path / "runs/p/pareto.csv")  # accuracy/FLOPs front even with one objective


def test_study_proxy_settings_apply_under_proxy_fidelity_only():
    from dse.search import compose

    cfg = compose(["study=wrn_table4"])
    proxy = cfg["study"]["proxy"]
    assert cfg["model"]["width_scale"] == proxy["model.width_scale"] < 1
    assert cfg["data"]["subset"] == proxy["data.subset"]
    typed = compose(["study=wrn_table4", "model.width_scale=0.5"])  # the command line wins
    assert typed["model"]["width_scale"] == 0.5 and typed["data"]["subset"] == proxy["data.subset"]
    paper = compose(["study=wrn_table4", "fidelity=paper"])  # the paper recipe trains the point as declared
    assert paper["model"]["width_scale"] == 1.0 and paper["data"]["subset"] is None


def test_thinned_training_records_both_counts(tmp_path):
    from dse import complexity
    from dse.point import Point

    point = {"stem": {"width": 16}, "stages": [{"block": "basic", "depth": 1, "width": 32}]}
    study = tmp_path / "thin.yaml"
    study.write_text(yaml.safe_dump({"name": "thin", "objectives": ["accuracy", "params"],
                                     "grid": [{"label": "w32", "point": point}]}))
    ok(search_here(f"study={study}", "model.width_scale=0.25", cwd=tmp_path))
    (trial,) = load_study(tmp_path / "runs/thin", "thin").trials
    full = Point.from_dict(trial.user_attrs["point"])  # the point as declared, at the data's geometry
    assert trial.user_attrs["params"] == complexity(full).params
    assert trial.user_attrs["trained_params"] == complexity(full.thinned(0.25)).params < trial.user_attrs["params"]
    row = read_csv(tmp_path / "runs/thin/trials.csv")[0]
    assert float(row["width_scale"]) == 0.25 and int(row["trained_flops"]) == trial.user_attrs["trained_flops"]


def test_a_point_proposed_again_is_not_retrained(tmp_path):
    space = tmp_path / "two.yaml"  # a space of two points: the sampler must propose one of them again
    space.write_text(yaml.safe_dump({"base": "resnet20", "params": {
        "width": {"type": "choice", "values": [4, 8]}}, "set": {"stages[*].width": "width * 2 ** i"}}))
    proc = ok(search_here(f"space={space}", "sampler=random", "study.n_trials=3", "study.name=d", UNSIZED,
                          cwd=tmp_path))
    trials = load_study(tmp_path / "runs/d", "d").trials
    fresh = [t for t in trials if t.user_attrs["status"] == "ok"]
    again = [t for t in trials if t.user_attrs["status"] == "duplicate"]
    assert len(fresh) == 2 and len({t.user_attrs["point_id"] for t in fresh}) == 2  # each point trained once
    assert again and all(t.state.name == "FAIL" and t.values is None for t in again)  # no sampler counts it twice
    assert "stopping: over 60 proposed points" in proc.stdout  # 3 trials asked, only 2 exist: it stops, not spins
    for t in again:
        twin = next(f for f in fresh if f.user_attrs["point_id"] == t.user_attrs["point_id"])
        assert t.user_attrs["duplicate_of"] == twin.number and "train_seconds" not in t.user_attrs
    assert len(read_csv(tmp_path / "runs/d/pareto.csv")) <= 2  # a repeated point is not a second front entry
