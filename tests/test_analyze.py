"""`python -m dse.analyze` on real SQLite Optuna studies whose errors are set by hand (no training): the EDF,
the normalized weights and the KS statistic equal a computation written out here; trends, importance; the
refinement of an AnyNet study writes a space that dse.search runs; bad input gives one line and exit 2."""
from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from search_helpers import ok, search

optuna.logging.set_verbosity(optuna.logging.WARNING)
D = optuna.distributions


def make_run(run_dir: Path, trials: list[dict], space: str = "resnext") -> Path:
    """A run directory with study.db holding these trials (params, val_acc, flops, status ...)."""
    run_dir.mkdir(parents=True)
    study = optuna.create_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}",
                                directions=["maximize", "minimize"])
    study.set_user_attr("space", space)
    for t in trials:
        attrs = {"status": t.get("status", "ok"), "flops": t["flops"], "params": t.get("params", 1000),
                 "point": t.get("point", {}), "history": t.get("history", [])}
        if attrs["status"] == "ok":
            attrs["val_acc"] = t["acc"]
        if "acts" in t:
            attrs["acts"] = t["acts"]
        params = t.get("params_", {"depth": t.get("depth", 1)})
        dists = t.get("dists", {"depth": D.IntDistribution(1, 8)})
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs,
                                                  values=[t.get("acc", 0.0), t["flops"]]))
    return run_dir


# Group A: four trained trials (and one rejected, one duplicate, which must not count); group B: three.
A = [dict(acc=0.90, flops=1.0e6, depth=1), dict(acc=0.80, flops=1.5e6, depth=2), dict(acc=0.70, flops=1.2e6, depth=1),
     dict(acc=0.60, flops=3.0e6, depth=2), dict(status="rejected", flops=9e6), dict(status="duplicate", flops=1e6)]
B = [dict(acc=0.85, flops=2.0e6, depth=1), dict(acc=0.75, flops=4.0e6, depth=1), dict(acc=0.65, flops=1.0e6, depth=3)]


def by_hand():
    """The expected edf.csv with 2 bins, written out.

    All complexities span [1e6, 4e6]: edges 1e6, 2e6, 4e6; bin 0 is [1e6, 2e6), bin 1 [2e6, 4e6].
    A: errors .1 .2 .3 .4 in bins 0 0 0 1 -> 2 occupied bins: bin 0 trials weigh 1/2/3 = 1/6, bin 1's 1/2.
       plain EDF at its own errors .25 .5 .75 1; normalized 1/6 2/6 3/6 1.
    B: errors .15 .25 .35 in bins 1 1 0 -> weights 1/4 1/4 1/2; plain 1/3 2/3 1; normalized 1/4 1/2 1.
    """
    return {("run_a", 0): (0.1, 1e6, 1 / 6, 0.25, 1 / 6), ("run_a", 1): (0.2, 1.5e6, 1 / 6, 0.5, 2 / 6),
            ("run_a", 2): (0.3, 1.2e6, 1 / 6, 0.75, 3 / 6), ("run_a", 3): (0.4, 3e6, 1 / 2, 1.0, 1.0),
            ("run_b", 0): (0.15, 2e6, 1 / 4, 1 / 3, 1 / 4), ("run_b", 1): (0.25, 4e6, 1 / 4, 2 / 3, 1 / 2),
            ("run_b", 2): (0.35, 1e6, 1 / 2, 1.0, 1.0)}


def read(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dse.analyze", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("an")
    make_run(root / "run_a", A)
    make_run(root / "run_b", B)
    proc = analyze("run_a", "run_b", "--bins", "2", "--out", "out", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, proc


def test_edf_csv_equals_the_hand_computation(two_runs):
    root, _ = two_runs
    rows = read(root / "out" / "edf.csv")
    assert list(rows[0]) == ["group", "number", "error", "complexity", "weight", "edf", "edf_normalized"]
    expected = by_hand()
    assert len(rows) == len(expected)  # rejected and duplicate trials are not in it
    for r in rows:
        error, complexity, weight, plain, normalized = expected[(r["group"], int(r["number"]))]
        assert float(r["error"]) == pytest.approx(error)
        assert float(r["complexity"]) == complexity
        assert float(r["weight"]) == pytest.approx(weight)
        assert float(r["edf"]) == pytest.approx(plain)
        assert float(r["edf_normalized"]) == pytest.approx(normalized)
    for g in ("run_a", "run_b"):  # weights sum to 1 per group, and each occupied bin carries the same weight
        mine = [r for r in rows if r["group"] == g]
        assert sum(float(r["weight"]) for r in mine) == pytest.approx(1.0)
        per_bin = {}
        for r in mine:
            k = 0 if float(r["complexity"]) < 2e6 else 1
            per_bin[k] = per_bin.get(k, 0.0) + float(r["weight"])
        assert all(v == pytest.approx(1 / len(per_bin)) for v in per_bin.values())


def test_ks_equals_the_hand_computation(two_runs):
    """Normalized EDFs at the union of errors .1 .15 .2 .25 .3 .35 .4:
    A 1/6 1/6 2/6 2/6 3/6 3/6 1, B 0 1/4 1/4 1/2 1/2 1 1: largest gap 1/2 at .35, where B is ahead.
    Plain: A .25 .25 .5 .5 .75 .75 1, B 0 1/3 1/3 2/3 2/3 1 1: largest gap .25."""
    root, proc = two_runs
    (row,) = read(root / "out" / "ks.csv")
    assert (row["group_a"], row["group_b"], row["n_a"], row["n_b"]) == ("run_a", "run_b", "4", "3")
    assert float(row["ks"]) == pytest.approx(0.5)
    assert float(row["at_error"]) == pytest.approx(0.35)
    assert float(row["edf_a_minus_b"]) == pytest.approx(-0.5)
    assert float(row["ks_plain"]) == pytest.approx(0.25)
    assert 0 < float(row["p_value"]) <= 1
    assert "KS run_a vs run_b: 0.500 normalized (0.250 plain)" in proc.stdout


def test_trends_and_importance(two_runs):
    root, _ = two_runs
    trends = read(root / "out" / "trends.csv")
    a1 = next(r for r in trends if r["group"] == "run_a" and r["param"] == "depth" and r["value"] == "1")
    assert int(a1["n"]) == 2 and float(a1["median_error"]) == pytest.approx(0.2)  # errors .1 and .3
    assert float(a1["min_error"]) == pytest.approx(0.1)
    lo, mid, hi = (float(a1[k]) for k in ("boot_min_lo", "boot_min", "boot_min_hi"))
    assert 0.1 - 1e-9 <= lo <= mid <= hi <= 0.3 + 1e-9
    imp = read(root / "out" / "importance.csv")
    assert imp == []  # issue 21: 4 and 3 trained trials are too few for importances (MIN_IMPORTANCE)
    for name in ("edf.png", "trends.png", "importance.png"):
        assert (root / "out" / name).stat().st_size > 1000


def test_normalize_none_and_by(tmp_path):
    make_run(tmp_path / "run_a", A)
    ok(analyze("run_a", "--normalize", "none", "--out", "o1", cwd=tmp_path))
    rows = read(tmp_path / "o1" / "edf.csv")
    assert all(float(r["weight"]) == pytest.approx(0.25) and r["edf"] == r["edf_normalized"] for r in rows)
    ok(analyze("run_a", "--by", "depth", "--out", "o2", cwd=tmp_path))
    rows = read(tmp_path / "o2" / "edf.csv")
    assert {r["group"] for r in rows} == {"depth=1", "depth=2"}
    assert (tmp_path / "o2" / "ks.csv").is_file()


def test_ped_anova_ranks_for_low_error(tmp_path):
    """`good` decides the error, `noise` does not: PED-ANOVA (and fANOVA) must rank `good` first."""
    rng = random.Random(0)
    trials = []
    for i in range(40):
        good, noise = rng.randint(0, 9), rng.randint(0, 9)
        trials.append(dict(acc=0.5 + 0.04 * good + 0.001 * rng.random(), flops=1e6 + 1e4 * i,
                           params_={"good": good, "noise": noise},
                           dists={"good": D.IntDistribution(0, 9), "noise": D.IntDistribution(0, 9)}))
    make_run(tmp_path / "r", trials)
    ok(analyze("r", cwd=tmp_path))
    imp = {r["param"]: r for r in read(tmp_path / "r" / "analysis" / "importance.csv")}
    assert float(imp["good"]["ped_anova"]) > float(imp["noise"]["ped_anova"])
    assert float(imp["good"]["fanova"]) > float(imp["noise"]["fanova"])


def anynet_trials(n: int) -> list[dict]:
    """`n` feasible AnyNet points (Fashion-MNIST geometry) with made-up accuracies."""
    from dse.cost import complexity
    from dse.space.parse import load

    space = load("anynet").with_geometry(image_size=28, in_chans=1, num_classes=10)
    rng = random.Random(1)
    out = []
    for i in range(n):
        point, values = space.sample_with_values(rng)
        params, dists = {}, {}
        for name, v in values.items():
            if v is None:
                continue
            p = space.params[name]
            params[name] = p.label(v)
            dists[name] = (D.CategoricalDistribution([p.label(c) for c in p.values]) if p.type == "choice"
                           else D.IntDistribution(int(p.low), int(p.high), step=int(p.step or 1)))
        out.append(dict(acc=0.6 + 0.3 * rng.random(), flops=complexity(point).flops, point=point.to_dict(),
                        params_=params, dists=dists))
    return out


def test_refinement_writes_a_space_that_search_runs(tmp_path):
    from dse.space.parse import load

    make_run(tmp_path / "any", anynet_trials(16), space="anynet")
    proc = ok(analyze("any", "--top", "0.25", cwd=tmp_path))
    refined = tmp_path / "any" / "analysis" / "refined.yaml"
    assert "any: refined with w0" in proc.stdout
    data = yaml.safe_load(refined.read_text())
    assert {"w0", "wa", "wm"} <= set(data["params"]) and "width" not in data["params"]
    fits = read(tmp_path / "any" / "analysis" / "refined.csv")
    assert len(fits) == 4  # the best quarter of 16
    space = load(refined)
    for f in fits:  # every best model's fitted rule is a point of the refined space
        assert data["params"]["w0"]["low"] <= float(f["w0"]) <= data["params"]["w0"]["high"]
        assert data["params"]["wm"]["low"] <= float(f["wm"]) <= data["params"]["wm"]["high"]
    values = {**space.default_values(), "w0": data["params"]["w0"]["low"], "wa": data["params"]["wa"]["low"],
              "wm": data["params"]["wm"]["low"]}
    point = space.point({k: v for k, v in values.items() if v is not None})
    assert all(s.width % 8 == 0 for s in point.stages)
    run = tmp_path / "smoke"
    run.mkdir()
    ok(search(f"space={refined}", "study.n_trials=1", "run_dir=out", "study.trials_per_timeout=null", cwd=run))  # unsized


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """run_a (group A) and run_empty (no trained trial), made once for every bad-input case (each refused case
    writes nothing: the test checks)."""
    root = tmp_path_factory.mktemp("bad")
    make_run(root / "run_a", A)
    make_run(root / "run_empty", [dict(status="rejected", flops=9e6)])
    return root


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "error: no study storage in nowhere"),
    (["run_a", "--normalize", "acts"], "error: --normalize acts: 4 of 4 trained trials carry no 'acts'"),
    (["run_a", "--normalize", "bogus"], "error: argument --normalize: invalid choice: 'bogus'"),
    (["run_a", "--by", "nope"], "error: --by nope: no trained trial has that parameter; parameters: depth"),
    (["run_a", "--bins", "0"], "error: --bins: must be >= 1, got 0"),
    (["run_empty"], "error: run_empty: study 'run_empty' has no trained trials (status ok) yet"),
    ([], "error: the following arguments are required: RUN_DIR"),
])
def test_bad_input_is_one_line(bad_input_runs, args, message):
    before = sorted(p.relative_to(bad_input_runs) for p in bad_input_runs.rglob("*"))
    proc = analyze(*args, cwd=bad_input_runs)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert sorted(p.relative_to(bad_input_runs) for p in bad_input_runs.rglob("*")) == before  # nothing written


def test_acts_used_when_every_trial_has_them(tmp_path):
    make_run(tmp_path / "run_a", [{**t, "acts": 1000 * (i + 1)} for i, t in enumerate(A[:4])])
    ok(analyze("run_a", "--normalize", "acts", cwd=tmp_path))
    rows = read(tmp_path / "run_a" / "analysis" / "edf.csv")
    assert sorted(float(r["complexity"]) for r in rows) == [1000, 2000, 3000, 4000]
