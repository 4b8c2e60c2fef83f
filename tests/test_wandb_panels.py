"""W&B, offline: the study summary run logs the EDF, trends and importance of dse.analyze as tables and custom
charts; the workspace of those panels (wandb-workspaces) is built without a network and points at exactly the
tables the summary logs; `python -m dse.report RUN --wandb-workspace` without a key says so in one line."""
from __future__ import annotations

import contextlib
import io
import json
import os

import pytest

from analysis_helpers import make_study


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    """A real offline summary run of a stored study: (run_dir, offline run folder, rows)."""
    from dse import report
    from dse.results import wandb_log
    run_dir = tmp_path_factory.mktemp("wb") / "study_w"
    study = make_study(run_dir)
    rows = report.rows(study)
    front = report.pareto(rows, ["accuracy", "flops"])
    mp = pytest.MonkeyPatch()
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.delenv("WANDB_MODE", raising=False)
    try:
        folder = wandb_log.log_summary(wandb_log.LoggerConfig("wandb"), run_dir, "study_w", rows, front, ["accuracy", "flops"])
    finally:
        mp.undo()
    return run_dir, folder, rows


def tables(folder) -> dict:
    """{logged key: table json} of an offline run (media/table/<key>_<step>_<hash>.table.json)."""
    out = {}
    for path in (folder / "files" / "media" / "table").rglob("*.table.json"):
        rel = path.relative_to(folder / "files" / "media" / "table").as_posix()
        key = rel.rsplit("_", 2)[0]
        out[key] = json.loads(path.read_text())
    return out


def test_summary_logs_edf_trends_and_importance(summary):
    from dse.results.wandb_panels import analysis_of

    run_dir, folder, rows = summary
    logged = tables(folder)
    for key in ("trials", "pareto_table", "hypervolume_curve_table", "edf_table", "edf_trials",
                "importance_fanova_table", "importance_ped_anova_table", "trends"):
        assert key in logged, (key, sorted(logged))
    params = ["depth_0", "depth_1", "depth_2", "width_0", "width_1", "width_2"]
    assert all(f"trends/{p}_table" in logged for p in params)
    expected = analysis_of(rows, "study_w", run_dir)
    edf = logged["edf_table"]
    assert edf["columns"] == ["error_pct", "fraction", "curve"] and len(edf["data"]) == 2 * 12
    mine = sorted((100 * r["error"], r["edf_normalized"]) for r in expected.edf_rows)
    got = sorted((e, f) for e, f, c in edf["data"] if c == "normalized")
    assert [x for pair in got for x in pair] == pytest.approx([x for pair in mine for x in pair])
    imp = {p: v for p, v in logged["importance_fanova_table"]["data"]}
    assert set(imp) == set(params) and sum(imp.values()) == pytest.approx(1.0)
    blobs = b"".join(p.read_bytes() for p in folder.glob("*.wandb"))
    assert b"wandb/line/v0" in blobs and b"edf_table" in blobs and b"wandb/bar/v0" in blobs  # the charts


def test_workspace_panels_read_the_logged_tables(summary):
    import wandb_workspaces.reports.v2 as wr

    from dse.results.wandb_panels import workspace

    _, folder, _ = summary
    logged = tables(folder)
    params = ["depth_0", "depth_1", "depth_2", "width_0", "width_1", "width_2"]
    built = workspace("study_w", params, "someone", "dse")
    names = [s.name for s in built.sections]
    assert names[:3] == ["Pareto front", "Design space: error EDF and importance",
                         "Trends: best and median error per parameter value"]
    charts = [p for s in built.sections for p in s.panels if isinstance(p, wr.CustomChart)]
    assert len(charts) == 5 + len(params)
    for chart in charts:  # each chart reads a table the summary run logged, with that table's columns
        key = chart.query["summaryTable"]["tableKey"]
        assert key in logged, key
        for column in chart.chart_fields.values():
            assert column is None or column in logged[key]["columns"], (key, column)
    model = built._to_model()  # the definition serializes with no network
    assert "study_w" in json.dumps(model.model_dump(by_alias=True, exclude_none=True), default=str)


def test_save_without_a_key_is_one_line(tmp_path, monkeypatch):
    """dse.report's main in this process, with no WANDB_* variable and a HOME without a netrc (a subprocess with
    its own HOME started a second pre-imported interpreter for this one call; tests/fastspawn.py)."""
    from dse.report import main

    run_dir = tmp_path / "study_k"
    make_study(run_dir, n=4)
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(run_dir), "--wandb-workspace"])
    assert rc == 2 and out.getvalue() == ""
    assert err.getvalue().startswith("error: --wandb-workspace: saving needs a W&B API key")
    assert len(err.getvalue().strip().splitlines()) == 1


def test_save_with_a_key_uploads_the_built_workspace(tmp_path, monkeypatch):
    """With a key, save_workspace saves what it built (the upload itself is stubbed: no network here)."""
    import wandb_workspaces.workspaces as ws

    from dse import report

    from dse.results import wandb_panels
    run_dir = tmp_path / "study_s"
    study = make_study(run_dir, n=4)
    saved = []

    def fake_save(self):
        saved.append(self)
        return self

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_ENTITY", "team")
    monkeypatch.setattr(ws.Workspace, "save", fake_save)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: f"https://wandb.ai/{self.entity}/{self.project}"))
    url = wandb_panels.save_workspace(study, report.rows(study))
    assert url == "https://wandb.ai/team/dse" and saved[0].name == "dse study_s"
