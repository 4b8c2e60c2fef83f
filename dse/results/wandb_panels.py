"""The design-space panels of the W&B study summary, and a W&B workspace of every summary panel.

`log_analysis(run, rows, study)` logs, into the summary run that dse.results.wandb_log already fills (trials table,
Pareto scatter, hypervolume), the error EDF (plain and FLOPs-normalized), the trends per parameter and the
fANOVA / PED-ANOVA importances of dse.analyze, each as a W&B table and a custom chart.

`workspace(study, params, entity, project)` defines the matching workspace with `wandb-workspaces`: sections for
the Pareto front and hypervolume, the design-space EDF and importance, the trends, and the trials table, over
the study's runs (W&B group = study name). Building it needs no network; `save_workspace` uploads it and
needs an API key (`python -m dse.report RUN_DIR --wandb-workspace`).
"""
from __future__ import annotations

import os
from pathlib import Path

from dse.errors import UserError

# key logged by the summary run -> (W&B chart preset, its fields, title). One list for logging and workspace.
SUMMARY_CHARTS = {
    "pareto": ("wandb/scatter/v0", {"x": "mflops", "y": "accuracy"}, "accuracy vs MFLOPs"),
    "hypervolume_curve": ("wandb/line/v0", {"x": "trial", "y": "hypervolume"}, "hypervolume"),
    "edf": ("wandb/line/v0", {"x": "error_pct", "y": "fraction", "stroke": "curve"},
            "error EDF (plain and FLOPs-normalized)"),
    "importance_fanova": ("wandb/bar/v0", {"label": "param", "value": "fanova"}, "fANOVA importance (low error)"),
    "importance_ped_anova": ("wandb/bar/v0", {"label": "param", "value": "ped_anova"},
                             "PED-ANOVA importance (low error)"),
}
TREND = ("wandb/line/v0", {"x": "value", "y": "boot_min_pct", "stroke": "series"})


def trend_key(param: str) -> str:
    """The summary key of one parameter's trend chart."""
    return f"trends/{param}"


def analysis_of(rows: list[dict], study: str, run_dir: Path):
    """dse.analyze's tables for the study's rows (one group, FLOPs-normalized; no refinement)."""
    from dse.results.analysis import analyze_runs, rows_run

    return analyze_runs([rows_run(rows, study, run_dir)], refine=False, reps=200)


def log_analysis(run, rows: list[dict], study: str, run_dir: Path) -> list[str]:
    """Log the EDF, trends and importance charts into `run`; returns the keys logged (none before 2 trials)."""
    import wandb
    from wandb.plot.custom_chart import plot_table

    done = [r for r in rows if r.get("status") == "ok" and r.get("accuracy") is not None]
    if len(done) < 2:
        return []
    a = analysis_of(rows, study, run_dir)
    logged = {}
    edf = sorted(a.edf_rows, key=lambda r: r["error"])
    data = [[100 * r["error"], r["edf"], "plain"] for r in edf] + [[100 * r["error"], r["edf_normalized"], "normalized"]
                                                                   for r in edf]
    logged["edf"] = wandb.Table(columns=["error_pct", "fraction", "curve"], data=data)
    logged["edf_trials"] = wandb.Table(columns=list(edf[0]), data=[list(r.values()) for r in edf])
    for name in ("fanova", "ped_anova"):
        logged[f"importance_{name}"] = wandb.Table(columns=["param", name], data=[
            [r["param"], r[name] or 0.0] for r in a.importance_rows])
    params = list(dict.fromkeys(r["param"] for r in a.trend_rows))
    for p in params:
        mine = [r for r in a.trend_rows if r["param"] == p]
        logged[trend_key(p)] = wandb.Table(columns=["value", "boot_min_pct", "series"], data=[
            [str(r["value"]), 100 * r[k], s] for r in mine for k, s in (("boot_min", "best (bootstrap)"),
                                                                        ("boot_min_lo", "best 2.5%"),
                                                                        ("boot_min_hi", "best 97.5%"),
                                                                        ("median_error", "median"))])
    logged["trends"] = wandb.Table(columns=list(a.trend_rows[0]), data=[[str(v) for v in r.values()]
                                                                        for r in a.trend_rows])
    out = {}
    for key, table in logged.items():
        spec = SUMMARY_CHARTS.get(key) or (TREND + (f"error (%) by {key.split('/', 1)[1]}",) if key.startswith(
            "trends/") else None)
        if spec is None:
            out[key] = table
            continue
        preset, fields, title = spec
        out[key] = plot_table(preset, table, fields, {"title": title})
    run.log(out)
    ks = a.ks_rows
    run.summary.update({"analysis_params": params, "n_trained": len(a.records)}
                       | ({"ks": ks[0]["ks"]} if ks else {}))
    return list(out)


def _chart(key: str, preset: str, fields: dict, title: str):
    """A workspace panel showing the custom chart logged under `key`."""
    import wandb_workspaces.reports.v2 as wr

    return wr.CustomChart(query={"summaryTable": {"tableKey": f"{key}_table"}}, chart_name=preset,
                          chart_fields=dict(fields), chart_strings={"title": title})


def workspace(study: str, params: list[str], entity: str, project: str):
    """The W&B workspace of a study's summary panels (built offline; `.save()` needs a key)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    charts = {k: _chart(k, *v) for k, v in SUMMARY_CHARTS.items()}
    trends = [_chart(trend_key(p), TREND[0], TREND[1], f"error (%) by {p}") for p in params]
    sections = [
        ws.Section(name="Pareto front", is_open=True, panels=[charts["pareto"], charts["hypervolume_curve"],
                                                             wr.LinePlot(x="trial", y=["hypervolume"])]),
        ws.Section(name="Design space: error EDF and importance", is_open=True,
                   panels=[charts["edf"], charts["importance_fanova"], charts["importance_ped_anova"]]),
        ws.Section(name="Trends: best and median error per parameter value", is_open=True, panels=trends),
        ws.Section(name="Trials", is_open=False, panels=[wr.WeavePanelSummaryTable(table_name="trials"),
                                                         wr.WeavePanelSummaryTable(table_name="trends")]),
    ]
    return ws.Workspace(name=f"dse {study}", entity=entity, project=project, sections=sections,
                        runset_settings=ws.RunsetSettings(filters=expr.And(expr.Metric("Group") == study)))


def has_key() -> bool:
    """Whether W&B can authenticate here: WANDB_API_KEY or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def target(entity: str | None = None, project: str | None = None) -> tuple[str | None, str]:
    """(entity, project) of the study's W&B runs: the run's logger config, else env, else (None, 'dse')."""
    entity = entity or os.environ.get("WANDB_ENTITY")
    project = project or os.environ.get("WANDB_PROJECT") or "dse"
    return entity, project


def save_workspace(optuna_study, rows: list[dict], entity: str | None = None, project: str | None = None) -> str:
    """Build the study's workspace and save it to W&B; returns its URL (a UserError without a key).

    `entity`, `project`: the run's logger settings (dse.rundir.SavedRun), else the environment's."""
    done = [r for r in rows if r.get("status") == "ok" and r.get("accuracy") is not None]
    params = sorted({k[6:] for r in done for k in r if k.startswith("space.") and r[k] not in (None, "")})
    entity, project = target(entity, project)
    built = workspace(optuna_study.study_name, params, entity or "<entity>", project)
    if not has_key():
        raise UserError(f"--wandb-workspace: saving needs a W&B API key (WANDB_API_KEY or `wandb login`); the "
                        f"workspace ({sum(len(s.panels) for s in built.sections)} panels) was built but not saved")
    if entity is None:
        import wandb

        built.entity = wandb.Api().default_entity
    return built.save().url
