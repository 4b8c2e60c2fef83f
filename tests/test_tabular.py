"""bench/make_tabular.py: rows carry dse.complexity's counts and per-epoch columns; a rerun skips finished points."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "make_tabular.py"
TINY = ["--subset", "64", "--val-subset", "64", "--epochs", "2", "--batch-size", "32", "--threads", "1"]


def run(out: Path, *extra: str) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *TINY, *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def point_of(row: dict):
    from dse import complexity
    from dse.space.parse import load, spaces_dir

    space = load(str(Path(spaces_dir()) / "resnext.yaml")).with_geometry(image_size=28, in_chans=1, num_classes=10)
    point = space.point({k: int(row[k]) for k in ("depth", "cardinality", "bottleneck_width", "width")})
    return point, complexity(point)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("tabular") / "t.csv"
    # two feasible points (the grid's first) and one over the default study's 10 MFLOPs budget
    first = run(out, "--limit", "2")
    over = run(out, "--where", "depth=29,cardinality=16,bottleneck_width=16,width=128")
    return out, first, over


def test_rows_match_complexity_and_have_epochs(table):
    out, first, _ = table
    assert "2 to train" in first
    got = rows(out)
    assert len(got) == 3
    for row in got:
        point, counts = point_of(row)
        assert row["point_id"] == point.id
        assert int(row["params"]) == counts.params and int(row["flops"]) == counts.flops
    trained = [r for r in got if r["status"] == "ok"]
    assert len(trained) == 2
    for row in trained:
        assert row["epochs"] == "2"
        for i in (1, 2):
            assert 0.0 <= float(row[f"acc_{i}"]) <= 1.0
            assert float(row[f"sec_{i}"]) > 0 and float(row[f"cpu_{i}"]) > 0 and float(row[f"loss_{i}"]) > 0
        assert row["val_acc"] == row["acc_2"]
        assert float(row["train_seconds"]) >= float(row["sec_1"]) + float(row["sec_2"]) - 1e-3
        assert float(row["viol_flops_max"]) <= 0
    (over,) = [r for r in got if r["status"] == "over_budget"]
    assert over["flops"] and float(over["viol_flops_max"]) > 0
    assert over["acc_1"] == "" and over["train_seconds"] == ""
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["fidelity"]["epochs"] == 2 and meta["fidelity"]["subset"] == 64
    assert meta["budget"]["flops"]["max"] == 1e7
    assert meta["runs"][0]["command"].startswith("python bench/make_tabular.py")


def test_rerun_skips_finished_points(table):
    out, _, _ = table
    before = out.read_text()
    again = run(out, "--limit", "2")
    assert "2 already in" in again and "0 to do" in again
    assert out.read_text() == before


def test_other_fidelity_is_refused(table):
    out, _, _ = table
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--subset", "64", "--val-subset", "64", "--epochs", "3",
                           "--limit", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "another fidelity" in proc.stderr
