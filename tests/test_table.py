"""dse.table: paper rows from the data file, pending cells, real numbers from a real Optuna storage, τ."""
import math

import optuna
import pytest

from dse import study
from dse.results.tables import PENDING, error_pct, like_printed, paper_table
from dse.table import make

STUDIES = {"wrn_table4": "wrn_table4", "wrn_blocks": "wrn_table2", "wrn_dropout": "wrn_table6",
           "resnext_table3": "resnext_table3", "resnext_cifar": "resnext_table7"}


@pytest.mark.parametrize("name, table", STUDIES.items())
def test_grid_is_exactly_the_paper_rows(name, table):
    s = study.load(name)
    assert s.paper["table"] == table
    cells = study.cell_points(s, None)
    assert list(cells) == [r["label"] for r in paper_table(table)["rows"]]


def _printed_match(ours: str, printed: str) -> bool:
    return ours == printed.lstrip("~")


@pytest.mark.parametrize("name", ["wrn_table4", "wrn_blocks", "resnext_cifar"])
def test_params_column_matches_the_papers_printed_digits(name, tmp_path):
    result = make(name, runs=str(tmp_path / "runs"))
    checked = [r for r in result["rows"] if r.paper_params]
    assert checked, "the paper prints sizes for these rows"
    for row in checked:
        assert _printed_match(like_printed(row.params, row.paper_params), row.paper_params), row.label


def test_empty_storage_renders_all_pending(tmp_path):
    result = make("wrn_table4", runs=str(tmp_path / "runs"))
    md = result["paths"]["md"].read_text()
    assert md.count(f"| {PENDING} |") == 10 and result["tau"] is None and result["n"] == 0
    assert "Kendall τ: n/a" in md
    assert result["paths"]["tex"].read_text().count(f"& {PENDING} &") == 10
    assert not (tmp_path / "runs" / "wrn_table4" / "study.db").exists()  # reading made no storage


def _record(run_dir, name, cells: dict):
    """A real SQLite Optuna study with COMPLETE trials carrying dse's trial attrs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    st = optuna.create_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}",
                             directions=["maximize", "minimize"])
    labels = list(cells)
    for label, accs in cells.items():
        for seed, acc in enumerate(accs):
            dist = {"cell": optuna.distributions.CategoricalDistribution(labels),
                    "seed": optuna.distributions.IntDistribution(0, 9)}
            trial = optuna.trial.create_trial(params={"cell": label, "seed": seed}, distributions=dist,
                                              values=[acc, 1.0], user_attrs={"test_acc": acc, "val_acc": acc,
                                                                             "status": "ok"})
            st.add_trial(trial)
    failed = optuna.trial.create_trial(params={"cell": labels[0], "seed": 5}, distributions=dist,
                                       state=optuna.trial.TrialState.FAIL, user_attrs={"status": "failed"})
    st.add_trial(failed)


def test_partial_storage_real_numbers_and_tau(tmp_path):
    runs = tmp_path / "runs"
    rows = paper_table("wrn_table4")["rows"]
    # accuracies ordered like the paper's CIFAR-10 errors for 4 rows: tau = 1 over those 4 rows
    chosen = [r for r in rows if r["label"] in ("WRN-40-1", "WRN-40-2", "WRN-40-4", "WRN-28-10")]
    cells = {r["label"]: [1 - r["cifar10"] / 100 * 2, 1 - r["cifar10"] / 100 * 2 - 0.01] for r in chosen}
    _record(runs / "wrn_table4", "wrn_table4", cells)
    result = make("wrn_table4", runs=str(runs))
    by = {r.label: r for r in result["rows"]}
    wrn401 = by["WRN-40-1"]
    assert len(wrn401.errors) == 2  # the FAIL trial is not counted
    assert wrn401.mean == pytest.approx(2 * 6.85 + 0.5)
    assert wrn401.std == pytest.approx(math.sqrt(0.5))
    assert result["tau"] == pytest.approx(1.0) and result["n"] == 4
    md = result["paths"]["md"].read_text()
    assert md.count(f"| {PENDING} |") == 6 and "(n = 4 rows)" in md
    assert f"{2 * 6.85 + 0.5:.2f} ± 0.71 (2)" in md
    csv_text = result["paths"]["csv"].read_text()
    assert "WRN-40-1," in csv_text and ",6.85" in csv_text


def test_cli_accepts_override_and_plain_name(tmp_path, capsys):
    from dse.table import main

    assert main([f"runs={tmp_path}", "study=wrn_dropout"]) == 0
    assert (tmp_path / "wrn_dropout" / "table.md").is_file()
    assert main(["wrn_dropout", f"out={tmp_path / 'o'}"]) == 0
    assert (tmp_path / "o" / "table.csv").is_file()
    assert main(["study=nope"]) == 2 and "unknown study 'nope'" in capsys.readouterr().err
    assert main(["colour=red"]) == 2


def test_error_units():
    assert error_pct(0.9583) == pytest.approx(4.17) and error_pct(95.83) == pytest.approx(4.17)


def test_tau_per_seed_and_how_trials_were_trained(tmp_path):
    import yaml

    runs = tmp_path / "runs"
    rows = {r["label"]: r["cifar10"] for r in paper_table("wrn_table4")["rows"]}
    chosen = ["WRN-40-1", "WRN-40-2", "WRN-40-4", "WRN-28-10"]
    # seed 0 ranks like the paper; seed 1 ranks exactly against it
    cells = {label: [1 - rows[label] / 100, 1 - (20 - rows[label]) / 100] for label in chosen}
    _record(runs / "wrn_table4", "wrn_table4", cells)
    (runs / "wrn_table4" / "config.yaml").write_text(yaml.safe_dump({
        "data": {"name": "fashion_mnist", "subset": 20000}, "trainer": {"max_epochs": 4, "recipe": "proxy"},
        "model": {"width_scale": 0.125, "min_width": 4}}))
    result = make("wrn_table4", runs=str(runs))
    assert result["seed_taus"] == {0: pytest.approx(1.0), 1: pytest.approx(-1.0)}
    md = result["paths"]["md"].read_text()
    assert "Kendall τ per seed: seed 0 1.00, seed 1 -1.00" in md
    assert "Trained as: data fashion_mnist (20000 training samples), 4 epochs" in md and "widths x0.125" in md


def test_trained_as_comes_from_the_trials_not_config_yaml(tmp_path):
    """Provenance per trial (issue 11): a config.yaml rewritten by a later run cannot relabel the table."""
    import yaml

    from dse import provenance

    from dse.train import fit as train
    runs = tmp_path / "runs"
    settings = [provenance.settings({"name": "fashion_mnist", "subset": n}, train.recipe({"max_epochs": e}),
                                    (0.125, 4), 0) for n, e in ((20000, 4), (8000, 2))]
    (runs / "wrn_table4").mkdir(parents=True)
    st = optuna.create_study(study_name="wrn_table4", storage=f"sqlite:///{runs / 'wrn_table4' / 'study.db'}",
                             directions=["maximize", "minimize"])
    dist = {"cell": optuna.distributions.CategoricalDistribution(["WRN-40-1", "WRN-40-2"]),
            "seed": optuna.distributions.IntDistribution(0, 9)}
    for label, acc, s in (("WRN-40-1", 0.9, settings[0]), ("WRN-40-2", 0.92, settings[1])):
        st.add_trial(optuna.trial.create_trial(params={"cell": label, "seed": 0}, distributions=dist,
                                               values=[acc, 1.0], user_attrs={"test_acc": acc, "val_acc": acc,
                                                                              "status": "ok", "settings": s}))
    (runs / "wrn_table4" / "config.yaml").write_text(yaml.safe_dump({
        "data": {"name": "cifar10"}, "trainer": {"max_epochs": 200, "recipe": "wrn"}}))
    md = make("wrn_table4", runs=str(runs))["paths"]["md"].read_text()
    assert "cifar10" not in md and "200 epochs" not in md
    assert "Trained under 2 different settings" in md
    assert "(1) data fashion_mnist (20000 training samples), 4 epochs" in md
    assert "(2) data fashion_mnist (8000 training samples), 2 epochs" in md


def test_tau_of_the_seed_means_is_scipys_kendall_tau_b(tmp_path):
    """Three seeds of every WRN Table 4 row, errors drawn at random: the table's τ is scipy's τ-b of its means."""
    import csv
    import random
    import statistics

    from scipy.stats import kendalltau

    runs = tmp_path / "runs"
    rows = paper_table("wrn_table4")["rows"]
    rng = random.Random(3)
    accs = {r["label"]: [round(0.9 - r["cifar10"] / 100 + rng.uniform(-0.02, 0.02), 3) for _ in range(3)] for r in rows}
    accs["WRN-16-8"] = list(accs["WRN-16-10"])  # a tie in our means
    _record(runs / "wrn_table4", "wrn_table4", accs)
    result = make("wrn_table4", runs=str(runs))
    means = [statistics.fmean(100 * (1 - a) for a in accs[r["label"]]) for r in rows]
    expect = kendalltau(means, [r["cifar10"] for r in rows]).statistic  # scipy's default is τ-b
    assert result["tau"] == pytest.approx(expect) and result["n"] == 10
    lo, hi = result["interval"]
    assert lo <= expect <= hi
    md = result["paths"]["md"].read_text()
    assert f"seed-mean error ranking vs the paper's) = {expect:.2f} (n = 10 rows); bootstrap 95% interval " \
           f"[{lo:.2f}, {hi:.2f}] (2000 resamples of the 3 seeds and the rows)" in md
    assert "Kendall τ per seed: seed 0 " in md and "± " in md and "(3) |" in md
    assert f"[{lo:.2f}, {hi:.2f}]" in result["paths"]["tex"].read_text()
    with open(result["paths"]["csv"], newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert {(r["tau"], r["tau_lo"], r["tau_hi"]) for r in lines} == {(f"{expect:.4f}", f"{lo:.4f}", f"{hi:.4f}")}
    assert all(r["n"] == "3" and r["seeds"] == "0 1 2" for r in lines)
    by_seed = dict(item.split(":") for item in lines[0]["tau_by_seed"].split())
    for seed in range(3):
        alone = kendalltau([100 * (1 - accs[r["label"]][seed]) for r in rows], [r["cifar10"] for r in rows]).statistic
        assert float(by_seed[str(seed)]) == pytest.approx(alone, abs=1e-4)
    assert make("wrn_table4", runs=str(runs))["interval"] == (lo, hi)  # seeded: the same storage, the same interval


def _rows(errors: dict[str, list[float]], paper: dict[str, float]):
    from dse.results.tables import seed_rows

    return seed_rows(list(errors), {k: dict(enumerate(v)) for k, v in errors.items()}, paper)


def test_bootstrap_of_concordant_rows_without_spread_is_one():
    from dse.results.tables import bootstrap_tau

    paper = {"a": 4.0, "b": 5.0, "c": 6.0, "d": 7.0}
    # every seed ranks like the paper, with the same errors: any resample of seeds and rows has τ-b = 1
    # (a row drawn twice ties with itself on both sides, which τ-b leaves out)
    assert bootstrap_tau(_rows({k: [v * 2] * 3 for k, v in paper.items()}, paper)) == (1.0, 1.0)


def test_bootstrap_widens_when_seeds_disagree():
    from dse.results.tables import bootstrap_tau, kendall

    paper = {f"r{i}": float(i) for i in range(8)}
    agree = {k: [v + d for d in (0.1, -0.1, 0.05)] for k, v in paper.items()}  # every seed in the paper's order
    agree["r3"] = [4.2, 4.1, 4.3]  # but for one pair (r3, r4), swapped at every seed
    disagree = {k: [v, 7.0 - v, (v * 3) % 8] for k, v in paper.items()}  # in order, reversed, shuffled
    lo_a, hi_a = bootstrap_tau(_rows(agree, paper))
    lo_d, hi_d = bootstrap_tau(_rows(disagree, paper))
    for (lo, hi), errors in (((lo_a, hi_a), agree), ((lo_d, hi_d), disagree)):
        tau, _ = kendall(_rows(errors, paper))
        assert lo <= tau <= hi
    # (6/8)^8 = 10% of the resamples draw neither r3 nor r4: τ = 1 there, above the 97.5th percentile
    assert hi_a == 1.0 and lo_a > 0.5
    # 1/27 of the resamples draw seed 1 (reversed) three times, 1/27 seed 0: τ = -1 and 1, beyond 2.5% each
    assert (lo_d, hi_d) == (-1.0, 1.0)
    assert hi_a - lo_a < hi_d - lo_d


def test_vectorized_tau_b_is_scipys_with_ties_and_dropped_entries():
    import numpy as np
    from scipy.stats import kendalltau

    from dse.results.tables import tau_b_rows

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, size=(200, 7)).astype(float), rng.integers(0, 3, size=(200, 7)).astype(float)
    x[::7, 2] = np.nan  # a row with no run at the drawn seeds drops out
    expect = [kendalltau(a[~np.isnan(a)], b[~np.isnan(a)]).statistic for a, b in zip(x, y)]
    assert np.allclose(tau_b_rows(x, y), expect, equal_nan=True, atol=1e-12)
    assert np.isnan(tau_b_rows(np.array([[1.0, 1.0, 1.0]]), np.array([[1.0, 2.0, 3.0]])))[0]  # constant: no τ
