"""dse.calibrate on a tiny grid study: real trainings per budget (dse.search subprocesses), τ against scipy's
on the stored errors, a second run that trains nothing, a dry run, and one-line errors for bad budgets."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import statistics
from pathlib import Path

import optuna
import pytest
import yaml
from scipy.stats import kendalltau

from dse import calibrate
from dse.results import tables as table

PAPER = {r["label"]: r["cifar10"] for r in table.paper_table("wrn_table4")["rows"]}
# Three paper rows of WRN Table 4, as tiny nets (the labels pick the paper's errors; the nets only need to differ)
CELLS = {"WRN-40-1": 4, "WRN-16-8": 8, "WRN-28-10": 16}
FAST = ["fidelity=smoke", "data=synthetic", "trainer.threads=1"]
BUDGETS = ["trainer.max_epochs=1", "trainer.max_epochs=2"]
COLUMNS = ["budget", "cpu_minutes", "cpu_source", "seeds", "seeds_asked", "rows", "tau", "tau_lo", "tau_hi",
           "tau_vs_dearest", "reference", "run_dir", "train_command", "command"]


def write_study(folder: Path) -> Path:
    """A grid study of three one-block nets whose labels are rows of the paper's WRN Table 4."""
    path = folder / "tiny_cal.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny_cal", "objectives": ["accuracy", "params"], "paper": {"table": "wrn_table4", "column": "cifar10"},
        "proxy": {"model.width_scale": 1.0, "data.subset": 512},
        "grid": [{"label": lab, "point": {"stages": [{"block": "basic", "depth": 1, "width": w}]}}
                 for lab, w in CELLS.items()]}))
    return path


def calibrate_in(folder: Path, *argv: str) -> tuple[int, str, str]:
    """dse.calibrate.main in `folder` (its runs/ and results/ land there), output captured."""
    out, err, old = io.StringIO(), io.StringIO(), os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("WANDB_")]:
            mp.delenv(key)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("PYTHONWARNINGS", "ignore")
        mp.setenv("OMP_NUM_THREADS", "1")
        try:
            os.chdir(folder)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = calibrate.main(list(argv))
        finally:
            os.chdir(old)
    return rc, out.getvalue(), err.getvalue()


def stored(run_dir: Path):
    """The trials of the budget's study (its SQLite storage in run_dir)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name="tiny_cal", storage=f"sqlite:///{run_dir / 'study.db'}").get_trials()


def seed_means(trials) -> dict[str, float]:
    """{cell: mean test error %} over the COMPLETE trials, computed here from the stored accuracies."""
    by: dict[str, list[float]] = {}
    for t in trials:
        if t.state.name == "COMPLETE":
            by.setdefault(t.params["cell"], []).append(100 * (1 - t.user_attrs["test_acc"]))
    return {k: statistics.fmean(v) for k, v in by.items()}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """Two budgets x two seeds of the tiny study, trained once for the tests below."""
    folder = tmp_path_factory.mktemp("cal")
    study = write_study(folder)
    args = [f"study={study}", *(a for b in BUDGETS for a in ("--budget", b)), "--seeds", "2", "--target", "0.5", *FAST]
    rc, out, err = calibrate_in(folder, *args)
    assert rc == 0, out[-3000:] + err[-3000:]
    return folder, study, args, out


def test_each_budget_trains_every_cell_and_seed_once_in_its_own_storage(calibrated):
    folder, study, _, out = calibrated
    for budget in ("trainer.max_epochs-1", "trainer.max_epochs-2"):
        trials = stored(folder / "runs" / "calibrate" / "tiny_cal" / budget)
        cells = sorted((t.params["cell"], t.params["seed"]) for t in trials)
        assert cells == sorted((lab, s) for lab in CELLS for s in (0, 1))
        assert all(t.state.name == "COMPLETE" and t.user_attrs["cpu_seconds"] > 0 for t in trials)
        assert {t.user_attrs["epochs"] for t in trials} == {int(budget[-1])}
    assert (f"python -m dse.search study={study} study.seeds=2 trainer.max_epochs=1 "
            "run_dir=runs/calibrate/tiny_cal/trainer.max_epochs-1 progress=false fidelity=smoke data=synthetic "
            "trainer.threads=1") in out


def test_calibration_csv_holds_cost_and_tau_of_the_stored_errors(calibrated):
    folder, study, args, _ = calibrated
    with open(folder / "results" / "tiny_cal" / "calibration.csv", newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert list(lines[0]) == COLUMNS and [r["budget"] for r in lines] == BUDGETS
    means, seconds = {}, {}
    for r in lines:
        trials = stored(folder / r["run_dir"])
        means[r["budget"]] = seed_means(trials)
        seconds[r["budget"]] = sum(t.user_attrs["cpu_seconds"] for t in trials)
        assert float(r["cpu_minutes"]) == pytest.approx(seconds[r["budget"]] / 60, abs=1e-4)
        assert r["cpu_source"] == "cpu_seconds of 6 trials" and r["seeds"] == "2" and r["rows"] == "3"
        labels = list(CELLS)
        expect = kendalltau([means[r["budget"]][k] for k in labels], [PAPER[k] for k in labels]).statistic
        assert float(r["tau"]) == pytest.approx(expect, abs=1e-4)
        lo, hi = float(r["tau_lo"]), float(r["tau_hi"])
        assert -1 <= lo <= hi <= 1
        assert r["command"] == "python -m dse.calibrate " + " ".join(args) and r["reference"] == "paper"
        assert r["train_command"].startswith(f"python -m dse.search study={study} study.seeds=2 {r['budget']} ")
    dearest = max(seconds, key=seconds.get)  # the budget whose trials measured the most CPU time
    for r in lines:
        expect = kendalltau([means[r["budget"]][k] for k in CELLS], [means[dearest][k] for k in CELLS]).statistic
        assert float(r["tau_vs_dearest"]) == pytest.approx(expect, abs=1e-4)


def test_the_interval_is_the_tables_bootstrap_of_the_stored_runs(calibrated):
    folder, _, _, _ = calibrated
    with open(folder / "results" / "tiny_cal" / "calibration.csv", newline="") as fh:
        lines = list(csv.DictReader(fh))
    for r in lines:
        per_seed: dict[str, dict[int, float]] = {}
        for t in stored(folder / r["run_dir"]):
            per_seed.setdefault(t.params["cell"], {})[t.params["seed"]] = 100 * (1 - t.user_attrs["test_acc"])
        lo, hi = table.bootstrap_tau(table.seed_rows(list(CELLS), per_seed, PAPER))
        assert (float(r["tau_lo"]), float(r["tau_hi"])) == (pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4))


def test_the_png_is_written(calibrated):
    import matplotlib.image

    folder, _, _, _ = calibrated
    image = matplotlib.image.imread(folder / "results" / "tiny_cal" / "calibration.png")
    assert image.shape[:2] == (600, 960) and image.std() > 0.01  # 8 x 5 in at 120 dpi, not a blank page


def test_a_second_run_trains_nothing_and_a_dry_run_trains_nothing(calibrated):
    folder, study, args, _ = calibrated
    run = folder / "runs" / "calibrate" / "tiny_cal"
    before = {b: [(t.number, t.datetime_complete) for t in stored(run / b)] for b in ("trainer.max_epochs-1",
                                                                                      "trainer.max_epochs-2")}
    rc, out, err = calibrate_in(folder, *args)
    assert rc == 0, err
    assert out.count("every cell x seed finished") == 2 and "training" not in out
    assert {b: [(t.number, t.datetime_complete) for t in stored(run / b)] for b in before} == before
    rc, out, err = calibrate_in(folder, f"study={study}", "--budget", "trainer.max_epochs=3", "--dry-run",
                                "--out", "dry", *FAST)
    assert rc == 0, err
    assert "6 of 6 cells x seeds not finished (--dry-run: not trained)" in out
    assert not (run / "trainer.max_epochs-3").exists()
    with open(folder / "dry" / "calibration.csv", newline="") as fh:
        (line,) = list(csv.DictReader(fh))
    assert line["seeds"] == "0" and line["tau"] == "" and line["cpu_minutes"] == "0.0000"


@pytest.mark.parametrize("budget, names", [
    ("trainer.max_epoch=2", ["'trainer.max_epoch'", "trainer.max_epochs"]),
    ("optim.lr=0.1", ["'optim.lr'", "model.<key>, data.<key>, trainer.<key>"]),
    ("trainer.max_epochs=abc", ["trainer.max_epochs", "'abc'"]),
    ("data.subset", ["'data.subset' is not KEY=VALUE"]),
])
def test_a_bad_budget_is_one_line_and_nothing_runs(tmp_path, budget, names):
    study = write_study(tmp_path)
    rc, out, err = calibrate_in(tmp_path, f"study={study}", "--budget", "trainer.max_epochs=1", "--budget", budget,
                                *FAST)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert all(n in err for n in names), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_cal.yaml"]  # no runs/, no results/


def test_an_unwritable_out_is_one_line_before_anything_trains(tmp_path):
    """Issue 21: --out that cannot be written (here a file where the folder would be) is refused up front."""
    study = write_study(tmp_path)
    (tmp_path / "taken").write_text("a file, not a folder")
    rc, out, err = calibrate_in(tmp_path, f"study={study}", "--budget", "trainer.max_epochs=1",
                                "--out", str(tmp_path / "taken"), *FAST)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: --out: cannot write to ")
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_budget_spec_names_its_run_directory():
    budget = calibrate.parse_budget("trainer.max_epochs=2,data.subset=5000")
    assert budget == {"trainer.max_epochs": "2", "data.subset": "5000"}
    assert calibrate.slug(budget) == "data.subset-5000__trainer.max_epochs-2"
    assert calibrate.label(budget) == "data.subset=5000,trainer.max_epochs=2"


def _result(name: str, minutes: float, per_seed: dict) -> dict:
    return {"budget": name, "cpu_minutes": minutes, "per_seed": per_seed, "labels": list(per_seed)}


def test_without_a_paper_column_the_dearest_budget_is_the_reference():
    dear = _result("dear", 50.0, {"a": {0: 1.0, 1: 1.2}, "b": {0: 2.0, 1: 2.2}, "c": {0: 3.0, 1: 3.4},
                                  "d": {0: 4.0, 1: 4.0}})
    cheap = _result("cheap", 5.0, {"a": {0: 2.0, 1: 2.0}, "b": {0: 1.0, 1: 1.5}, "c": {0: 3.0, 1: 3.5},
                                   "d": {0: 4.0, 1: 4.5}})
    assert calibrate.score([cheap, dear], {}) is dear
    ref = [1.1, 2.1, 3.2, 4.0]
    expect = kendalltau([2.0, 1.25, 3.25, 4.25], ref).statistic  # 4 rows, one pair swapped: (5 - 1) / 6
    assert expect == pytest.approx(4 / 6)
    assert cheap["tau"] == pytest.approx(expect) and cheap["tau_vs_dearest"] == pytest.approx(expect)
    assert cheap["tau_lo"] <= cheap["tau"] <= cheap["tau_hi"]
    assert dear["tau"] is None and dear["tau_vs_dearest"] == pytest.approx(1.0)
    assert cheap["reference"] == "dearest budget (dear)"
    chosen, best = calibrate.pick([cheap, dear], -1.0, dear, paper=False)
    assert chosen is cheap and best is cheap  # the reference itself is never picked
    chosen, best = calibrate.pick([cheap, dear], 1.0, dear, paper=False)
    assert chosen is None and best is cheap


def test_pick_is_the_cheapest_whose_lower_bound_reaches_the_target():
    rows = [{"budget": b, "cpu_minutes": m, "tau_lo": lo} for b, m, lo in
            (("a", 10, 0.5), ("b", 20, 0.8), ("c", 40, 0.9), ("d", 5, None))]
    chosen, best = calibrate.pick(rows, 0.75, None, paper=True)
    assert chosen["budget"] == "b" and best["budget"] == "c"
    chosen, best = calibrate.pick(rows, 0.95, None, paper=True)
    assert chosen is None and best["budget"] == "c"


def test_the_printed_preset_is_the_studys_proxy_with_the_budget_in_it():
    proxy = {"model.width_scale": 0.125, "data.subset": 20000, "trainer.lr": 0.05}
    text = calibrate.proxy_lines(proxy, {"data.subset": "5000", "trainer.max_epochs": "2"}, ["data=synthetic"])
    assert text == ("proxy:\n  model.width_scale: 0.125\n  data.subset: 5000\n  trainer.lr: 0.05\n"
                    "  trainer.max_epochs: 2\n")
    assert yaml.safe_load(text)["proxy"]["data.subset"] == 5000


def test_cost_falls_back_to_train_seconds_and_says_so():
    dist = {"cell": optuna.distributions.CategoricalDistribution(["a", "b"]),
            "seed": optuna.distributions.IntDistribution(0, 1)}
    st = optuna.create_study(directions=["maximize", "minimize"])
    for cell, attrs in (("a", {"cpu_seconds": 90.0, "train_seconds": 50.0}), ("b", {"train_seconds": 30.0})):
        st.add_trial(optuna.trial.create_trial(params={"cell": cell, "seed": 0}, distributions=dist, values=[0.5, 1.0],
                                               user_attrs={"status": "ok", **attrs}))
    seconds, source = calibrate.cost(st)
    assert seconds == 120.0  # 90 CPU seconds of one trial + 30 wall seconds of the other
    assert source == "cpu_seconds of 1 trials; train_seconds (wall) of 1 trials without cpu_seconds"
    result = {"budget": "data.subset=5", "cpu_minutes": 2.0, "cpu_source": source, "seeds": 1, "seeds_asked": 1,
              "rows": 2, "tau": None, "tau_lo": None, "tau_hi": None, "tau_vs_dearest": None}
    assert f"(time: {source})" in calibrate.report([result], 0.75, None, paper=True)[1]
