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
    from dse.point import Point

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


def test_paper_figures_caption_and_a_shared_plotly_bundle(finished):
    """Issue 13: PDF/SVG beside the PNG, a caption, faint rejected points and budget, a small pareto.html."""
    run_dir = finished / "runs" / "rep"
    for name in ("pareto.pdf", "pareto.svg", "pareto.caption.txt", "plotly.min.js"):
        assert (run_dir / name).stat().st_size > 0, name
    svg = (run_dir / "pareto.svg").read_text()
    assert "multiply-adds (MFLOPs)" in svg and "validation accuracy (%)" in svg  # text kept as text
    caption = (run_dir / "pareto.caption.txt").read_text()
    assert "trained points of study rep" in caption and "Pareto front" in caption
    html = (run_dir / "pareto.html").read_text()
    assert len(html) < 100_000 and 'src="plotly.min.js"' in html  # was 4.8 MB with the bundle inlined


def test_rejected_points_budget_and_seed_error_bars_are_drawn(tmp_path):
    from dse.results import figures
    rows = [dict(_row(0, 0.80, 2_000_000), point_id="a", flops_violation=-0.8),
            dict(_row(1, 0.84, 2_000_000), point_id="a", flops_violation=-0.8),  # a second seed of point a
            dict(_row(2, 0.90, 6_000_000), point_id="b", flops_violation=-0.4),
            dict(_row(3, None, 30_000_000, status="rejected"), point_id="c", flops_violation=2.0)]
    points = {p["label"]: p for p in figures.by_point([r for r in rows if r["status"] == "ok"])}
    assert points["a"]["acc"] == pytest.approx(82.0) and points["a"]["std"] == pytest.approx(2.828, abs=1e-3)
    assert figures.budget(rows) == pytest.approx(10.0)  # 2e6 / (1 - 0.8) = 1e7 FLOPs
    front = report.pareto(rows, ["accuracy", "flops"])
    figures.write_static(tmp_path, "s", rows, front, "s")
    svg = (tmp_path / "pareto.svg").read_text()
    assert "rejected (over budget)" in svg and "budget 10 MFLOPs" in svg
    caption = (tmp_path / "pareto.caption.txt").read_text()
    assert "2 trained points" in caption and "up to 2 seeds" in caption and "1 points rejected" in caption
