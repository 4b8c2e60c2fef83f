"""Issue 21: every output says how its trials were really trained, read from the storage (never config.yaml):
provenance.yaml beside trials.csv, the Pareto caption, report.html, the tables' notes, dse.analyze's warning
when studies differ; config.yaml is written by a run that trains and left byte-identical by one that does not.
Real smoke-sized studies (dse.search in this process), real SQLite storages."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml

from search_helpers import ok, read_csv, run, search_here

ROOT = Path(__file__).resolve().parents[1]
SIZED = re.compile(r"sizing: .*?; (\d+) training samples x (\d+) epochs? at batch (\d+)")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """A fresh sized study (the default run's study.trials_per_timeout, smoke fidelity): (cwd, its output)."""
    cwd = tmp_path_factory.mktemp("prov")
    proc = ok(search_here("space=resnext", "study.n_trials=2", "study.name=prov", "sampler=random", cwd=cwd))
    return cwd, proc


def sized(proc) -> tuple[int, int, int]:
    """(training samples, epochs, batch) from the run's own sizing line."""
    found = SIZED.search(proc.stdout)
    assert found, proc.stdout[-2000:]
    return tuple(int(x) for x in found.groups())


def test_caption_and_report_name_data_subset_epochs_batch_and_seed(default_run):
    cwd, proc = default_run
    size, epochs, batch = sized(proc)
    run_dir = cwd / "runs" / "prov"
    ok(run("dse.report", str(run_dir), cwd=cwd, timeout=180))
    caption = (run_dir / "pareto.caption.txt").read_text()
    page = (run_dir / "report.html").read_text()
    for text in (caption, page):
        assert f"data synthetic ({size:,} training samples" in text, text[:3000]
        assert f"{epochs} epoch" in text and f"batch {batch}" in text and "seed 0" in text
        assert "sizing: " in text  # the sizing decision itself
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    assert f"commit {commit}" in caption


def test_provenance_yaml_beside_trials_csv(default_run):
    cwd, proc = default_run
    size, epochs, batch = sized(proc)
    run_dir = cwd / "runs" / "prov"
    made = yaml.safe_load((run_dir / "provenance.yaml").read_text())
    assert [v["trials"] for v in made["trained_with"]] == [2]
    settings = made["trained_with"][0]["settings"]
    assert (settings["data"]["subset"], settings["trainer"]["epochs"], settings["trainer"]["batch_size"]) == \
        (size, epochs, batch)
    assert made["seeds"] == [0] and made["sizing"].startswith("sizing: ") and made["trained_by"][0]["version"]
    assert read_csv(run_dir / "trials.csv")[0]["number"] == "0"  # trials.csv stays a plain CSV


def test_config_yaml_holds_the_sized_values(default_run):
    cwd, proc = default_run
    size, _, batch = sized(proc)
    cfg = yaml.safe_load((cwd / "runs" / "prov" / "config.yaml").read_text())
    assert cfg["data"]["subset"] == size and cfg["trainer"]["batch_size"] == batch


def test_a_run_that_trains_nothing_leaves_config_yaml_byte_identical(default_run):
    cwd, _ = default_run
    run_dir = cwd / "runs" / "prov"
    before = (run_dir / "config.yaml").read_bytes()
    proc = ok(search_here("space=resnext", "study.n_trials=2", "study.name=prov", "sampler=random", "logger=csv",
                          "progress=true", cwd=cwd))
    assert "nothing to train in this run" in proc.stdout and "2 of 2" in proc.stdout
    assert "2/2" not in proc.stderr + proc.stdout  # the bar said '2/2 trained' of a run that trained nothing
    assert (run_dir / "config.yaml").read_bytes() == before
    assert not list(run_dir.glob("config.*.yaml"))


def settings_of(subset: int, epochs: int) -> dict:
    """A trial's recorded settings (dse.provenance) at this subset and epoch count."""
    from dse import provenance
    from dse.train import fit as train

    return provenance.settings({"name": "fashion_mnist", "subset": subset}, train.recipe({"max_epochs": epochs}),
                               (1.0, 4), 0)


def stored_run(run_dir: Path, settings: dict, n: int = 4) -> None:
    """A run directory whose study holds `n` trained trials recorded with `settings`."""
    run_dir.mkdir(parents=True)
    study = optuna.create_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}",
                                directions=["maximize", "minimize"])
    dist = {"depth": optuna.distributions.IntDistribution(1, 8)}
    for i in range(n):
        attrs = {"status": "ok", "val_acc": 0.5 + 0.1 * i, "flops": 1e6 * (i + 1), "params": 1000, "point": {},
                 "settings": settings, "seed": 0}
        study.add_trial(optuna.trial.create_trial(params={"depth": i + 1}, distributions=dist, user_attrs=attrs,
                                                  values=[attrs["val_acc"], attrs["flops"]]))


def test_analyze_warns_in_one_line_when_studies_were_trained_differently(tmp_path):
    stored_run(tmp_path / "real", settings_of(20000, 2))
    stored_run(tmp_path / "smoke", settings_of(512, 1))
    proc = run("dse.analyze", "real", "smoke", "--out", "out", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1, proc.stderr
    assert "data.subset 20000 (real), 512 (smoke)" in warning[0] and "trainer.epochs" in warning[0]
    assert "no parameter importance from 4 trained trials" in proc.stdout


def test_analyze_says_nothing_when_studies_agree(tmp_path):
    stored_run(tmp_path / "a", settings_of(512, 1))
    stored_run(tmp_path / "b", settings_of(512, 1))
    proc = run("dse.analyze", "a", "b", "--out", "out", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr[-3000:]


def test_table_warns_when_its_trials_were_trained_differently(tmp_path, capsys):
    from dse.table import main

    run_dir = tmp_path / "runs" / "wrn_table4"
    run_dir.mkdir(parents=True)
    st = optuna.create_study(study_name="wrn_table4", storage=f"sqlite:///{run_dir / 'study.db'}",
                             directions=["maximize", "minimize"])
    dist = {"cell": optuna.distributions.CategoricalDistribution(["WRN-40-1", "WRN-40-2"]),
            "seed": optuna.distributions.IntDistribution(0, 9)}
    for label, acc, s in (("WRN-40-1", 0.9, settings_of(20000, 4)), ("WRN-40-2", 0.92, settings_of(8000, 2))):
        st.add_trial(optuna.trial.create_trial(params={"cell": label, "seed": 0}, distributions=dist,
                                               values=[acc, 1.0], user_attrs={"test_acc": acc, "val_acc": acc,
                                                                              "status": "ok", "settings": s}))
    assert main(["wrn_table4", "--runs", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: the trials of study wrn_table4 were trained under 2")
    assert "data.subset" in err[0] and "trainer.epochs" in err[0]
    md = (run_dir / "table.md").read_text()
    assert "Provenance (from the storage): Trained under 2 settings (differing in data.subset, trainer.epochs)" in md
    assert "(1 trial) data fashion_mnist (20,000 training samples), 4 epochs, batch 128" in md
