"""report.html: one self-contained page per study (no server, no network; plotly's JS inlined once).

It holds the interactive Pareto front with the study's seed noise (dse.results.noise: error bars, and a table of
the front that marks with '≈' a point within seed noise of the cheaper one before it), the error EDF (plain and
FLOPs-normalized, with its bootstrap band),
the error trends and parameter importance of dse.analyze, the ablation table when `dse.table` wrote one into
the run directory (table.csv), the trials' learning curves (user attr `history`) and a sortable list of all
trials with their points. `python -m dse.report RUN_DIR` writes it beside the other result files.
"""
from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from dse.errors import UserError
from dse.record import TrialRecord
from dse.results import noise

COLORS = ["#1f77b4", "#d1495b", "#2a9d8f", "#e9c46a", "#6a4c93", "#f4a261", "#264653", "#8d99ae"]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}td.l,th.l{text-align:left}
.scroll{max-height:480px;overflow:auto}.note{color:#666;font-size:13px}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return up ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _div(fig) -> str:
    """A figure as a <div> and its script, without plotly's JS (the page carries it once)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def pareto_fig(table: list[dict], front: list[dict], title: str):
    """Accuracy against MFLOPs: every trained point (the mean over its seeds, with its bar: its own spread, else
    the pooled seed noise) and the front."""
    import plotly.graph_objects as go

    from dse.results import figures
    from dse.results.files import scored

    done = scored(table)
    points = figures.by_point(done)
    bars = figures.error_bars(points, noise.estimate(done))
    fig = go.Figure([
        go.Scatter(x=[p["flops"] for p in points], y=[p["acc"] for p in points], mode="markers",
                   name="trained points", marker={"color": "#9aa5b1", "size": 7},
                   error_y={"type": "data", "array": bars, "color": "#c5cbd3", "visible": any(bars)},
                   text=[f"{p['label']} (trials {', '.join(map(str, p['numbers']))}, {p['n']} run(s))"
                         for p in points]),
        go.Scatter(x=[r["flops"] / 1e6 for r in front], y=[100 * r["accuracy"] for r in front], mode="lines+markers",
                   name="Pareto front", line={"shape": "hv", "color": COLORS[1]}, marker={"size": 10},
                   text=[f"trial {r['number']} {r['point_id']} params {r['params']:,}" for r in front])])
    fig.update_layout(title=title, xaxis_title="multiply-adds (MFLOPs)", yaxis_title="validation accuracy (%)",
                      xaxis_type="log" if done else "linear", template="plotly_white", height=420)
    return fig


def edf_fig(analysis):
    """Normalized EDF (solid, bootstrap band) and plain EDF (dashed) per group."""
    import plotly.graph_objects as go

    traces = []
    for k, g in enumerate(analysis.groups):
        c, color = analysis.curves[g], COLORS[k % len(COLORS)]
        x = [100 * v for v in c["grid"]]
        traces.append(go.Scatter(x=x + x[::-1], y=list(c["hi"]) + list(c["lo"])[::-1], fill="toself",
                                 fillcolor=color, opacity=0.15, line={"width": 0}, hoverinfo="skip",
                                 name=f"{g} 95% band", showlegend=False))
        traces.append(go.Scatter(x=x, y=list(c["normalized"]), mode="lines", line={"shape": "hv", "color": color},
                                 name=f"{g} normalized (n={c['n']})"))
        traces.append(go.Scatter(x=x, y=list(c["plain"]), mode="lines", name=f"{g} plain",
                                 line={"shape": "hv", "color": color, "dash": "dash", "width": 1}))
    fig = go.Figure(traces)
    fig.update_layout(title=f"error EDF (normalized by {analysis.measure})", xaxis_title="validation error (%)",
                      yaxis_title="cumulative fraction of models", template="plotly_white", height=400)
    return fig


def trends_fig(analysis):
    """Bootstrap min with 95% interval and median error per value, one panel per parameter."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    params = list(dict.fromkeys(r["param"] for r in analysis.trend_rows))
    cols = min(4, max(1, len(params)))
    rows = max(1, -(-len(params) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=params or ["(no sampled parameters)"])
    for i, name in enumerate(params):
        r_, c_ = i // cols + 1, i % cols + 1
        for k, g in enumerate(analysis.groups):
            mine = [t for t in analysis.trend_rows if t["param"] == name and t["group"] == g]
            if not mine:
                continue
            color, x = COLORS[k % len(COLORS)], [str(t["value"]) for t in mine]
            fig.add_trace(go.Scatter(
                x=x, y=[100 * t["boot_min"] for t in mine], mode="lines+markers", name=f"{g} best (bootstrap)",
                line={"color": color}, legendgroup=g, showlegend=i == 0,
                error_y={"type": "data", "symmetric": False,
                         "array": [max(0.0, 100 * (t["boot_min_hi"] - t["boot_min"])) for t in mine],
                         "arrayminus": [max(0.0, 100 * (t["boot_min"] - t["boot_min_lo"])) for t in mine]}),
                row=r_, col=c_)
            fig.add_trace(go.Scatter(x=x, y=[100 * t["median_error"] for t in mine], mode="lines",
                                     name=f"{g} median", line={"color": color, "dash": "dash", "width": 1},
                                     legendgroup=g, showlegend=i == 0), row=r_, col=c_)
    fig.update_xaxes(type="category")
    fig.update_layout(title="error (%) by parameter value", template="plotly_white", height=260 * rows + 80)
    return fig


def importance_fig(analysis):
    """fANOVA and PED-ANOVA importance bars."""
    import plotly.graph_objects as go

    rows = analysis.importance_rows[::-1]
    labels = [f"{r['study']}: {r['param']}" if len(analysis.runs) > 1 else r["param"] for r in rows]
    fig = go.Figure([go.Bar(y=labels, x=[r["fanova"] or 0 for r in rows], orientation="h", name="fANOVA"),
                     go.Bar(y=labels, x=[r["ped_anova"] or 0 for r in rows], orientation="h", name="PED-ANOVA")])
    fig.update_layout(title="parameter importance for low error", barmode="group", template="plotly_white",
                      height=max(300, 28 * len(rows) + 120))
    return fig


def curves_fig(histories: list[tuple[int, list]]):
    """Validation accuracy against epoch, one line per trained trial."""
    import plotly.graph_objects as go

    traces = []
    for number, hist in histories:
        pts = [(h.get("epoch"), h.get("val/acc")) for h in hist if h.get("val/acc") is not None]
        if pts:
            traces.append(go.Scatter(x=[p[0] for p in pts], y=[100 * p[1] for p in pts], mode="lines+markers",
                                     name=f"trial {number}", line={"width": 1}, marker={"size": 4}))
    fig = go.Figure(traces)
    fig.update_layout(title="learning curves", xaxis_title="epoch", yaxis_title="validation accuracy (%)",
                      template="plotly_white", height=400, showlegend=len(traces) <= 20)
    return fig


def front_html(table: list[dict], front: list[dict]) -> str:
    """The seed-noise line and the front, cheapest first, a point within seed noise of the one before it marked
    '≈' (not ranked above it)."""
    found = noise.estimate(table)
    rows = noise.front_rows(front, table, found)
    out = f"<p class=noise>{html.escape(found.words() if found is not None else noise.UNKNOWN)}</p>"
    if not rows:
        return out
    shown = [{"": noise.TIE if r["tie"] else "", "MFLOPs": round(r["flops"] / 1e6, 3),
              "val acc (%)": round(100 * r["accuracy"], 2), "runs": r["runs"], "trial": r["number"],
              "point": r["point_id"] or ""} for r in rows]
    note = (f"<p class=note>{html.escape(noise.ties_words(rows))}.</p>" if found is not None else "")
    return out + "\n" + html_table(shown, list(shown[0]), sortable=False) + note


def html_table(rows: list[dict], columns: list[str], sortable: bool = True) -> str:
    """An HTML table of dict rows (text escaped); numbers right-aligned, text left."""
    def cell(v) -> str:
        text = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        return f"<td{'' if numeric else ' class=l'}>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return (f"<div class=scroll><table{' class=sortable' if sortable else ''}><thead><tr>{head}</tr></thead>"
            f"<tbody>\n{body}\n</tbody></table></div>")


def trial_rows(table: list[dict]) -> tuple[list[dict], list[str]]:
    """The trials list: fixed columns, the sampled params, and the Point as compact JSON."""
    fixed = ["number", "status", "point_id", "accuracy", "error", "params", "flops", "epochs", "train_seconds"]
    space = sorted({k for r in table for k in r if k.startswith("space.")})
    out = []
    for r in table:
        point = {k[6:]: v for k, v in r.items() if k.startswith("point.") and v not in (None, "")}
        out.append({**{k: r.get(k) for k in fixed + space}, "point": json.dumps(point, separators=(",", ":"))})
    return out, fixed + space + ["point"]


def ablation(run_dir: Path) -> str | None:
    """The dse.table output of the run directory (table.csv) as HTML, when there is one."""
    path = run_dir / "table.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return html_table(rows, list(rows[0]) if rows else [], sortable=True) if rows else None


def build(run_dir: Path, optuna_study, table: list[dict], front: list[dict]) -> str:
    """The page's HTML text."""
    import plotly.offline

    from dse.results.analysis import MIN_IMPORTANCE, analyze_runs, study_run
    from dse.results.files import scored

    from dse.results import made

    name = optuna_study.study_name
    done = scored(table)
    trained_as = made.words(made.of_study(optuna_study)) or "These trials record no training settings."
    from dse.results import figures

    words = figures.caption(name, done, front, 0, None)  # this plot draws neither rejected points nor the budget
    sections = [("Pareto front", _div(pareto_fig(table, front, f"{name}: {len(front)} on the front of "
                                                                 f"{len(done)} trained trials"))
                 + f"\n<p class=note>{html.escape(words)}</p>\n" + front_html(table, front))]
    analysis = None
    if done:
        try:
            analysis = analyze_runs([study_run(optuna_study, run_dir, name)], refine=False, reps=200)
        except UserError as exc:
            sections.append(("Design-space analysis", f"<p class=note>not available: {html.escape(str(exc))}</p>"))
    if analysis is not None:
        sections.append(("Error EDF", _div(edf_fig(analysis))))
        sections.append(("Trends", _div(trends_fig(analysis))))
        sections.append(("Parameter importance", _div(importance_fig(analysis)) if analysis.importance_rows
                         else f"<p class=note>too few trained trials for importance (needs {MIN_IMPORTANCE}).</p>"))
    table_html = ablation(run_dir)
    if table_html:
        sections.append(("Ablation table (dse.table)", table_html))
    trials = {t.number: t for t in optuna_study.get_trials(deepcopy=False)}
    histories = [(r["number"], TrialRecord.from_trial(trials[r["number"]]).history or []) for r in done]
    sections.append(("Learning curves", _div(curves_fig(histories))))
    rows, columns = trial_rows(table)
    sections.append((f"Trials ({len(table)}; click a header to sort)", html_table(rows, columns)))
    body = "\n".join(f"<h2>{html.escape(t)}</h2>\n{content}" for t, content in sections)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(name)}: dse report</title>"
            f"<style>{STYLE}</style>\n<script>{plotly.offline.get_plotlyjs()}</script></head>\n<body>\n"
            f"<h1>{html.escape(name)}</h1>\n<p class=note>{len(table)} trials, {len(done)} trained. Written by "
            f"dse.report from the study's storage; self-contained (opens from disk, no network).</p>\n"
            f"<p class=made>{html.escape(trained_as)}</p>\n"
            f"{body}\n<script>{SORT_JS}</script>\n</body></html>\n")


def write(run_dir: Path, optuna_study, table: list[dict], front: list[dict], out: Path | None = None) -> Path:
    """Write report.html into `out` (default: run_dir, which holds table.csv when dse.table made one);
    returns its path."""
    path = Path(out or run_dir) / "report.html"
    path.write_text(build(Path(run_dir), optuna_study, table, front), encoding="utf-8")
    return path
