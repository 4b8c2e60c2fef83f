"""Zero-cost scores as trial measures: a real smoke search records them on every trained trial, and
`python -m dse.analyze` gives each score's Spearman rho against accuracy (values computed by hand), with n,
and leaves it out below dse.results.analysis.MIN_ZEROCOST trials."""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search_helpers import load_study, ok, search

optuna.logging.set_verbosity(optuna.logging.WARNING)
D = optuna.distributions


def make_run(run_dir: Path, trials: list[dict]) -> Path:
    """A run directory whose study.db holds these trained trials (acc, flops, zerocost) and one rejected one."""
    run_dir.mkdir(parents=True)
    study = optuna.create_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}",
                                directions=["maximize", "minimize"])
    study.set_user_attr("space", "resnext")
    for i, t in enumerate(trials):
        attrs = {"status": "ok", "val_acc": t["acc"], "flops": 1e6 + 1e4 * i, "params": 1000, "point": {}}
        if t.get("zerocost") is not None:
            attrs["zerocost"] = t["zerocost"]
        study.add_trial(optuna.trial.create_trial(params={"depth": 1 + i % 3}, user_attrs=attrs,
                                                  distributions={"depth": D.IntDistribution(1, 8)},
                                                  values=[t["acc"], attrs["flops"]]))
    rejected = {"status": "rejected", "reason": "over_budget", "flops": 9e9, "params": 1,
                "zerocost": {"synflow": 1e9, "naswot": 1e9, "grad_norm": 1e9, "snip": 1e9}}
    study.add_trial(optuna.trial.create_trial(params={"depth": 1}, distributions={"depth": D.IntDistribution(1, 8)},
                                              user_attrs=rejected, values=[0.0, 9e9]))
    return run_dir


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dse.analyze", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_spearman_rho_of_each_score_by_hand(tmp_path):
    """12 trained trials, accuracy 0.50 + 0.01 i. synflow = i ranks them alike: rho 1. naswot = -2i: rho -1.
    grad_norm swaps the ranks of trials 0/1 and 2/3: sum d^2 = 4, rho = 1 - 6 * 4 / (12 * 143) = 0.98601.
    snip is recorded on 5 trials only (< 10): no rho. The rejected trial's scores (1e9) must not count.
    A second study without scores (trained before dse recorded them) gives no rows and no line."""
    swap = [1, 0, 3, 2, *range(4, 12)]
    trials = [{"acc": 0.50 + 0.01 * i,
               "zerocost": {"synflow": float(i), "naswot": -2.0 * i, "grad_norm": float(swap[i]),
                            "snip": float(i) if i < 5 else None, "batch": 32, "seconds": 0.1}}
              for i in range(12)]
    make_run(tmp_path / "run_z", trials)
    make_run(tmp_path / "run_old", [{"acc": 0.6 + 0.01 * i} for i in range(12)])
    proc = ok(analyze("run_z", "run_old", "--out", "out", cwd=tmp_path))
    with open(tmp_path / "out" / "zerocost.csv") as fh:
        rows = {r["score"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"synflow", "naswot", "grad_norm", "snip"}
    assert all(r["study"] == "run_z" for r in rows.values())
    assert [rows[s]["n_trials"] for s in ("synflow", "naswot", "grad_norm", "snip")] == ["12", "12", "12", "5"]
    assert float(rows["synflow"]["spearman_rho"]) == pytest.approx(1.0)
    assert float(rows["naswot"]["spearman_rho"]) == pytest.approx(-1.0)
    assert float(rows["grad_norm"]["spearman_rho"]) == pytest.approx(1 - 6 * 4 / (12 * 143))
    assert rows["snip"]["spearman_rho"] == ""
    line = next(ln for ln in proc.stdout.splitlines() if "zero-cost" in ln)
    assert line == ("run_z: zero-cost scores, Spearman rho against accuracy: synflow +1.00 (n 12), naswot -1.00 "
                    "(n 12), grad_norm +0.99 (n 12); not given for snip (n 5): needs at least 10 trained trials "
                    "with the score")
    assert sum("zero-cost" in ln for ln in proc.stdout.splitlines()) == 1  # none for run_old


def test_a_search_records_the_scores_of_every_trained_trial(tmp_path):
    """A real smoke search (synthetic data, real Lightning fits): each trained trial carries the four scores,
    finite, from one minibatch, and the analysis says that 2 trials are too few for a rho."""
    ok(search("space=resnext", "study.n_trials=2", "study.name=z", "study.constraints.flops.max=1e9", cwd=tmp_path))
    trials = [t for t in load_study(tmp_path / "runs/z", "z").trials if t.user_attrs.get("status") == "ok"]
    assert len(trials) == 2
    for t in trials:
        zc = t.user_attrs["zerocost"]
        assert all(math.isfinite(zc[k]) for k in ("synflow", "naswot", "grad_norm", "snip")), zc
        assert zc["batch"] == 32 and zc["cpu_seconds"] > 0
    proc = ok(analyze("runs/z", "--out", "a", cwd=tmp_path))
    assert "not given for synflow (n 2), naswot (n 2), grad_norm (n 2), snip (n 2): needs at least 10" in proc.stdout
