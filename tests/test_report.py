"""`python -m dse.report` rebuilds every result file from the storage alone, and the report functions."""
from __future__ import annotations

import pytest
import yaml

from dse import report
from search_helpers import ok, read_csv, run, search_here

FILES = ("trials.csv", "pareto.csv", "pareto.png", "pareto.html", "best.yaml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished study (3 trials) in runs/rep/."""
    cwd = tmp_path_factory.mktemp("report")
    ok(search_here("space=resnext", "study.n_trials=3", "study.name=rep", "sampler=random", cwd=cwd))
    return cwd


@pytest.mark.parametrize("how", ["dir", "name"])
def test_report_rebuilds_from_storage(finished, how):
    run_dir = finished / "runs" / "rep"
    before = read_csv(run_dir / "trials.csv")
    for name in FILES:
        (run_dir / name).unlink()
    args = ["runs/rep"] if how == "dir" else ["study.name=rep"]
    proc = ok(run("dse.report", *args, cwd=finished, timeout=120))
    assert "rep: 3 trials" in proc.stdout
    for name in FILES:
        assert (run_dir / name).stat().st_size > 0, name
    assert read_csv(run_dir / "trials.csv") == before
    front = read_csv(run_dir / "pareto.csv")
    assert front and {r["number"] for r in front} <= {r["number"] for r in before}
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert [e["trial"] for e in best["front"]] == [int(r["number"]) for r in front]
    from dse.space.point import Point

    for entry in best["front"]:  # each front point loads back as a Point with the same id
        point = Point.from_dict(yaml.safe_load((run_dir / entry["file"]).read_text()))
        assert point.id == entry["point_id"]


def test_report_without_a_study_is_one_line(tmp_path):
    proc = run("dse.report", "runs/none", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1


def _row(number, acc, flops, status="ok"):
    return {"number": number, "status": status, "accuracy": acc, "error": None if acc is None else 1 - acc,
            "flops": flops, "params": flops // 10}


def test_pareto_keeps_only_non_dominated_finished_rows():
    rows = [_row(0, 0.80, 100), _row(1, 0.85, 200), _row(2, 0.70, 300), _row(3, 0.90, 400),
            _row(4, None, 50, status="rejected"), _row(5, 0.85, 250)]
    front = report.pareto(rows, ["accuracy", "flops"])
    assert [r["number"] for r in front] == [0, 1, 3]
    assert [r["number"] for r in report.pareto(rows, ["error"])] == [0, 1, 3]  # single objective: acc/FLOPs


def test_flatten_point_fields():
    flat = report.flatten({"stages": [{"depth": 2, "kernels": [3, 1, 3]}], "stem": {"width": 16}}, "point")
    assert flat == {"point.stages.0.depth": 2, "point.stages.0.kernels": "3|1|3", "point.stem.width": 16}
