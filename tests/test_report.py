"""`python -m dse.report` rebuilds every result file from the storage alone, and the report functions."""
from __future__ import annotations

import pytest
import yaml

from dse import report
from search_helpers import ok, read_csv, run, search_here

FILES = ("trials.csv", "pareto.csv", "pareto.png", "pareto.html", "best.yaml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished study (3 trials) in runs/rep/, at the sizes the default study's sizing picks at smoke
    fidelity (typed: no timing of a point first; see test_noise.SIZED)."""
    cwd = tmp_path_factory.mktemp("report")
    ok(search_here("space=resnext", "study.n_trials=3", "study.name=rep", "sampler=random", "data.subset=512",
                   "trainer.batch_size=16", cwd=cwd))
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
    assert "rejected off the axis (1)" in svg and "budget 10 MFLOPs" in svg  # 30 MFLOPs: past the budget's 10
    caption = (tmp_path / "pareto.caption.txt").read_text()
    assert "2 trained points" in caption and "up to 2 seeds" in caption and "1 points rejected" in caption
    assert "at up to 30 MFLOPs" in caption  # b, trained once, carries the noise pooled from a's two seeds:
    assert "Error bars on the point trained with one seed: the seed noise pooled over the study, ±2.83" in caption


def _default_like_rows() -> list[dict]:
    """results/default/busy_one_core_trials.csv's shape: 9 one-seed points at 2-9 MFLOPs, 2 rejected at 30 and
    176 MFLOPs (budget 10)."""
    flops = [2.2, 2.3, 3.2, 3.5, 4.1, 5.7, 5.8, 7.3, 8.4]
    rows = [dict(_row(i, 0.72 + 0.007 * i, int(f * 1e6)), point_id=f"p{i}", flops_violation=f / 10 - 1)
            for i, f in enumerate(flops)]
    return rows + [dict(_row(9 + i, None, int(f * 1e6), status="rejected"), point_id=f"r{i}",
                        flops_violation=f / 10 - 1) for i, f in enumerate((30, 176))]


def test_one_seed_draws_no_error_bars_and_says_so(tmp_path):
    """Issue 21: zero-length error bars from one seed are gone; the caption says there is no noise estimate."""
    from matplotlib.container import ErrorbarContainer

    from dse.results import figures
    rows = _default_like_rows()
    fig, plt, *_ = figures.draw(rows, report.pareto(rows, ["accuracy", "flops"]), "t")
    assert not [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    plt.close(fig)
    figures.write_static(tmp_path, "s", rows, report.pareto(rows, ["accuracy", "flops"]), "s")
    assert "trained with one seed: no error bars" in (tmp_path / "pareto.caption.txt").read_text()


def test_rejected_points_do_not_stretch_the_axis(tmp_path):
    """Issue 21: two rejected points at 30 and 176 MFLOPs took half the x-axis; the axis now ends past the budget."""
    from dse.results import figures
    rows = _default_like_rows()
    fig, plt, rejected, limit, beyond = figures.draw(rows, report.pareto(rows, ["accuracy", "flops"]), "t")
    lo, hi = fig.axes[0].get_xlim()
    plt.close(fig)
    assert limit == pytest.approx(10.0) and 10.0 < hi < 15.0 and 1.5 < lo < 2.2
    assert rejected == 2 and beyond == pytest.approx([30.0, 176.0])


@pytest.mark.parametrize("flops", [None, [2.2, 3.5, 5.7, 8.4], [0.05, 0.4, 3.0, 40.0], [1.0, 3e3]])
def test_tick_labels_do_not_overlap(flops):
    """Issue 21: '6789' and '40506070890100' were minor tick labels drawn on top of each other (None: the
    default study's shape, rejected points included)."""
    from dse.results import figures
    rows = _default_like_rows() if flops is None else [dict(_row(i, 0.7 + 0.01 * i, int(f * 1e6)), point_id=f"p{i}")
                                                        for i, f in enumerate(flops)]
    fig, plt, *_ = figures.draw(rows, report.pareto(rows, ["accuracy", "flops"]), "t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
              if t.get_text() and t.get_visible() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    plt.close(fig)
    assert len(boxes) >= 2, [t.get_text() for t in labels]
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]
