"""bench/search_efficiency.py: the exact 2-D hypervolume against hand computations, a small replay on a synthetic
table in bench/make_tabular.py's format (output shape, last line `ratio: X`), and the asynchronous replay (--workers)
with and without moasha, checked against sums read from the table itself."""
from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "search_efficiency.py"


def _bench():
    spec = importlib.util.spec_from_file_location("search_efficiency", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hypervolume_of_a_three_point_front_by_hand():
    hv = _bench().hypervolume
    # (accuracy, FLOPs), reference (0, 10): strips by accuracy, highest first, each as wide as the cheapest
    # FLOPs so far allows: (0.9-0.8)*(1-8/10) + (0.8-0.5)*(1-5/10) + (0.5-0)*(1-2/10) = 0.02 + 0.15 + 0.4
    front = [(0.5, 2.0), (0.8, 5.0), (0.9, 8.0)]
    assert hv(front, 10.0) == pytest.approx(0.57)
    assert hv(list(reversed(front)), 10.0) == pytest.approx(0.57)  # order does not matter
    assert hv(front + [(0.7, 6.0), (0.5, 2.0)], 10.0) == pytest.approx(0.57)  # dominated and repeated points
    assert hv(front + [(0.95, 10.0), (0.0, 1.0)], 10.0) == pytest.approx(0.57)  # at the reference: nothing
    assert hv([(1.0, 0.0)], 10.0) == pytest.approx(1.0) and hv([], 10.0) == 0.0


def test_replay_on_a_synthetic_table_prints_the_tables_and_the_ratio(tmp_path):
    table = tmp_path / "syn.csv"
    make = subprocess.run([sys.executable, str(BENCH), "--make-synthetic", str(table), "--epochs", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert make.returncode == 0, make.stderr
    out = tmp_path / "out.txt"
    proc = subprocess.run([sys.executable, str(BENCH), "--table", str(table), "--trials", "30", "--seeds", "2",
                           "--samplers", "random,tpe", "--pruned", "tpe", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio: -?\d+\.\d{3}|ratio: nan", lines[-1]), lines[-1]
    text = proc.stdout
    assert "180 points, 37 within budget" in text and "HV after N proposals" in text
    for name in ("random", "tpe", "tpe+dominance"):
        assert re.search(rf"^{re.escape(name)}\s+\d\.\d{{4}}±\d\.\d{{4}}", text, re.M), name
    assert "proposals to reach random's 30-proposal HV" in text
    assert out.read_text().strip() == text.strip()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "syn.csv"
    _bench().make_synthetic(path, epochs=4)
    return path


def test_plain_runs_charge_every_trained_point_once_and_moasha_pauses_at_rungs(synthetic):
    bench = _bench()
    table, meta = bench.read_table(synthetic)
    space = bench.load_space(meta)
    with synthetic.open(newline="") as fh:
        rows = {r["point_id"]: r for r in csv.DictReader(fh)}
    secs = {k: float(r["train_seconds"]) for k, r in rows.items() if r["status"] == "ok"}

    plain = bench.replay_async(table, space, meta, "random", 0, 40, 3)
    # No pruner: every trained point runs its whole fit once, so the compute is the sum of their training
    # seconds in the table; the clock never runs backwards.
    assert plain["finished"] == plain["trained"] > 5
    assert plain["time"] == sorted(plain["time"]) and plain["compute"] == sorted(plain["compute"])
    total = plain["compute"][-1]
    assert len(set(plain["points"])) == len(plain["points"]) == plain["trained"]  # no point trained twice
    assert total == pytest.approx(sum(secs[p] for p in plain["points"]))

    moasha = bench.replay_async(table, space, meta, "random", 0, 40, 3, {"eta": 3, "min_rung": 1})
    # Rungs at epochs 1 and 3: most trials pause at epoch 1, so fewer finish and less is spent per trial.
    assert moasha["paused"] > 0 and moasha["finished"] < moasha["trained"]
    assert moasha["compute"][-1] / moasha["trained"] < total / plain["trained"]
    assert moasha["stopped"] == moasha["trained"] - moasha["finished"]
    # Every epoch charged is one the table records for a trained point: at most its whole fit, at least epoch 1.
    firsts = sum(float(rows[p]["sec_1"]) for p in moasha["points"])
    assert firsts <= moasha["compute"][-1] <= sum(secs[p] for p in moasha["points"]) + 1e-6


def test_the_command_prints_the_table_and_a_ratio(synthetic, tmp_path):
    out = tmp_path / "out.txt"
    proc = subprocess.run([sys.executable, str(BENCH), "--table", str(synthetic), "--workers", "2", "--seeds", "2",
                           "--trials", "20", "--samplers", "random", "--moasha", "random", "--pruned", "none",
                           "--cache", str(tmp_path / "cache"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "rungs at epochs 1, 3 of 4" in text and "2 asynchronous workers" in text
    for name in ("random", "random+moasha"):
        assert re.search(rf"^{re.escape(name)}\s+(\d+±\d+|-)\s+\d+", text, re.M), name
    assert re.fullmatch(r"ratio: (\d+\.\d{3}|nan)", text.strip().splitlines()[-1])
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2 + 2 + 2  # reference, random, random+moasha
    assert out.read_text().strip() == text.strip()
    bad = subprocess.run([sys.executable, str(BENCH), "--table", str(synthetic), "--workers", "2", "--eta", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "study.moasha.eta: must be an integer >= 2, got 1" in bad.stderr
