"""bench/search_efficiency.py: the exact 2-D hypervolume against hand computations, and a small replay on a
synthetic table in bench/make_tabular.py's format (output shape, last line `ratio: X`)."""
from __future__ import annotations

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
