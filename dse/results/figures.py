"""The Pareto figure of a study, fit for a paper: PNG, PDF and SVG (text kept as text), a plain caption, and
an interactive HTML page whose plotly bundle is shared by the run directory.

What it shows: every trained point (accuracy against multiply-adds, log axis), seeds as error bars where a point
was trained with several (a grid cell with several seeds, a sampled point with `study.seeds`, the point the
default study repeats), the Pareto front as a step line with '≈' over a front point within seed noise of the
cheaper one before it (dse.results.noise), the points rejected over the
budget as faint ticks under the axis, and the budget as a faint dashed line. The x-axis spans the trained
points and the budget: rejected points beyond it sit at its right edge as one marker, and the caption gives
how many and how far. A point trained with one seed has no spread of its own: where the study measured its seed
noise, its bar is that pooled estimate (drawn apart, and named so in the legend and the caption); where it did
not, the point is a plain dot and the caption says there is no estimate. Major ticks only (1, 2, 5 per decade, fewer over wide ranges), so labels never
overlap. The legend sits outside the data.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from dse.results import noise

GREY, RED, FAINT = "#7b8794", "#d1495b", "#c5cbd3"


def by_point(done: list[dict]) -> list[dict]:
    """One entry per point: mean accuracy (%) and its spread over seeds (trials of the same point id)."""
    groups: dict[str, list[dict]] = {}
    for r in done:
        groups.setdefault(str(r.get("point_id") or r["number"]), []).append(r)
    out = []
    for rows in groups.values():
        accs = [100 * float(r["accuracy"]) for r in rows]
        std = statistics.stdev(accs) if len(accs) > 1 else 100 * float(rows[0].get("val_acc_std") or 0.0)
        n = len(accs) if len(accs) > 1 else int(rows[0].get("seeds") or 1)
        out.append({"flops": float(rows[0]["flops"]) / 1e6, "acc": statistics.fmean(accs), "std": std, "n": n,
                    "label": rows[0].get("label") or rows[0].get("point_id"), "numbers": [r["number"] for r in rows]})
    return out


def error_bars(points: list[dict], found) -> list[float]:
    """Each point's bar (accuracy %): its own spread over several seeds, else the pooled seed noise (0 without)."""
    return [p["std"] if p["n"] > 1 else (100 * found.sigma if found is not None else 0.0) for p in points]


def budget(rows: list[dict]) -> float | None:
    """The FLOPs bound (MFLOPs) the study's trials were held to, recovered from their constraint values."""
    found = [float(r["flops"]) / (1.0 + float(r["flops_violation"])) for r in rows
             if r.get("flops_violation") is not None and r.get("flops")]
    return statistics.median(found) / 1e6 if found else None


def caption(study: str, done: list[dict], front: list[dict], rejected: int, limit: float | None,
            beyond: list[float] | None = None) -> str:
    """A plain caption that says what the figure shows (`beyond`: MFLOPs of the rejected points past the axis)."""
    points = by_point(done)
    seeds = max((p["n"] for p in points), default=1)
    found = noise.estimate(done)
    text = (f"Validation accuracy against multiply-adds (MFLOPs, log scale) of the {len(points)} trained points of "
            f"study {study}; the {len(front)} points of the Pareto front are joined by a step line.")
    single = sum(p["n"] == 1 for p in points)
    if seeds > 1:
        text += f" Error bars on points trained with several seeds: one standard deviation over up to {seeds} seeds."
    if found is not None and single:
        some = f"the {single} points" if single > 1 else "the point"
        text += (f" Error bars on {some} trained with one seed: the seed noise pooled over the study, "
                 f"±{100 * found.sigma:.2f} points ({found.basis()}).")
    elif seeds == 1:
        text += " Each point was trained with one seed: no error bars, and no estimate of seed noise."
    if found is not None and front:
        tied = noise.front_rows(front, done, found)
        text += f" On the front, {noise.ties_words(tied)}."
    beyond = beyond or []
    if rejected:
        text += f" Ticks under the axis: {rejected} points rejected before training as over the budget"
        text += (f"; {len(beyond)} of them, at up to {max(beyond):.3g} MFLOPs, lie beyond the plotted range and "
                 "are marked at its right edge." if beyond else ".")
    if limit:
        text += f" Dashed line: the budget of {limit:.3g} MFLOPs."
    return text


def x_range(points: list[dict], limit: float | None) -> tuple[float, float] | None:
    """The x-axis range (MFLOPs): the trained points and the budget, with a margin on the log scale."""
    xs = [p["flops"] for p in points if p["flops"] > 0] + ([limit] if limit else [])
    if not xs:
        return None
    lo, hi = min(xs), max(xs)
    if hi <= lo * 1.5:  # one point, or a very narrow range
        return lo / 1.5, hi * 1.5
    return lo / 1.15, hi * 1.15


def log_ticks(ax, lo: float, hi: float) -> None:
    """Major ticks only, labelled plainly (3, 10, 20): 1-2-3-5 per decade under 1.5 decades, 1-2-5 under 3, else 1."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(hi / lo)
    subs = (1.0, 2.0, 3.0, 5.0) if decades < 1.5 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def draw(table: list[dict], front: list[dict], title: str | None):
    """The matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in the SVG (editable, searchable)
    done = [r for r in table if r.get("status") == "ok" and r.get("accuracy") is not None]
    rejected = [r for r in table if r.get("status") == "rejected" and r.get("flops")]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    points = by_point(done)
    found = noise.estimate(done)
    single = [p for p in points if p["n"] == 1]
    several = [p for p in points if p["n"] > 1]
    if single and found is None:  # one seed and no noise estimate: a dot, no error bar (no spread to show)
        ax.plot([p["flops"] for p in single], [p["acc"] for p in single], "o", ms=4, color=GREY,
                label="trained points" + (" (1 seed)" if several else ""))
    elif single:  # one seed: the study's pooled seed noise, drawn apart from a point's own spread
        ax.errorbar([p["flops"] for p in single], [p["acc"] for p in single], yerr=100 * found.sigma, fmt="o",
                    ms=4, color=GREY, ecolor=FAINT, elinewidth=1, capsize=0, ls="none",
                    label=f"1 seed (bars: seed noise ±{100 * found.sigma:.2f}, pooled)")
    if several:
        ax.errorbar([p["flops"] for p in several], [p["acc"] for p in several], yerr=[p["std"] for p in several],
                    fmt="o", ms=4, color=GREY, ecolor=FAINT, elinewidth=1, capsize=2,
                    label=f"mean ± std over up to {max(p['n'] for p in several)} seeds")
    if front:
        mean = {n: p for p in points for n in p["numbers"]}
        xs = [r["flops"] / 1e6 for r in front]
        ys = [mean[r["number"]]["acc"] if r["number"] in mean else 100 * r["accuracy"] for r in front]
        ax.step(xs, ys, where="post", color=RED, lw=1.5)
        ax.scatter(xs, ys, s=30, c=RED, label="Pareto front", zorder=3)
        tied = {r["number"] for r in noise.front_rows(front, done, found) if r["tie"]} if found else set()
        for r, x, y in zip(front, xs, ys):
            if r["number"] in tied:  # within seed noise of the cheaper front point before it: not ranked
                ax.annotate(noise.TIE, (x, y), textcoords="offset points", xytext=(5, 3), ha="left",
                            color=RED, fontsize=10)
    limit = budget(table)
    span = x_range(points, limit) or x_range([{"flops": r["flops"] / 1e6} for r in rejected], None)
    inside = [r["flops"] / 1e6 for r in rejected if span is None or r["flops"] / 1e6 <= span[1]]
    beyond = [r["flops"] / 1e6 for r in rejected if span is not None and r["flops"] / 1e6 > span[1]]
    if inside:
        ax.plot(inside, [0.0] * len(inside), "|", color=FAINT, ms=10, transform=ax.get_xaxis_transform(),
                label="rejected (over budget)", clip_on=False)
    if beyond:  # past the plotted range: one marker at the right edge, counted in the legend and the caption
        ax.plot([1.0], [0.0], ">", color=GREY, ms=6, transform=ax.transAxes, clip_on=False,
                label=f"rejected off the axis ({len(beyond)})")
    if limit:
        ax.axvline(limit, color=FAINT, ls="--", lw=1, label=f"budget {limit:.3g} MFLOPs")
    if span is not None and span[0] > 0:
        ax.set_xscale("log")
        ax.set_xlim(*span)
        log_ticks(ax, *span)
    ax.set_xlabel("multiply-adds (MFLOPs)")
    ax.set_ylabel("validation accuracy (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if points or rejected:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig, plt, len(rejected), limit, beyond


def write_static(run_dir: Path, study: str, table: list[dict], front: list[dict], title: str,
                 trained_as: str = "") -> None:
    """pareto.png (with a title), pareto.pdf and pareto.svg (without: a paper has its caption), pareto.caption.txt
    (ending with `trained_as`: how the trials were made, dse.results.made)."""
    fig, plt, rejected, limit, beyond = draw(table, front, title)
    fig.savefig(run_dir / "pareto.png", bbox_inches="tight")
    fig.axes[0].set_title("")
    for suffix in ("pdf", "svg"):
        fig.savefig(run_dir / f"pareto.{suffix}", bbox_inches="tight")
    plt.close(fig)
    done = [r for r in table if r.get("status") == "ok" and r.get("accuracy") is not None]
    text = caption(study, done, front, rejected, limit, beyond) + (f" {trained_as}" if trained_as else "")
    (run_dir / "pareto.caption.txt").write_text(text + "\n")


def write_html(path: Path, table: list[dict], front: list[dict], title: str) -> None:
    """The interactive plot; its plotly.min.js is written once beside it and shared by the run directory."""
    import plotly.graph_objects as go

    done = [r for r in table if r.get("status") == "ok" and r.get("accuracy") is not None]
    points = by_point(done)
    bars = error_bars(points, noise.estimate(done))
    trials = go.Scatter(x=[p["flops"] for p in points], y=[p["acc"] for p in points], mode="markers",
                        name="trained points", marker={"color": GREY, "size": 7},
                        error_y={"type": "data", "array": bars, "color": FAINT, "visible": any(bars)},
                        text=[f"{p['label']} (trials {', '.join(map(str, p['numbers']))})" for p in points])
    best = go.Scatter(x=[r["flops"] / 1e6 for r in front], y=[100 * r["accuracy"] for r in front],
                      mode="lines+markers", name="Pareto front", line={"shape": "hv", "color": RED},
                      marker={"size": 10, "color": RED},
                      text=[f"trial {r['number']} {r['point_id']} params {r['params']:,}" for r in front])
    fig = go.Figure([trials, best])
    fig.update_layout(title=title, xaxis_title="multiply-adds (MFLOPs)", yaxis_title="validation accuracy (%)",
                      xaxis_type="log" if points else "linear", template="plotly_white")
    fig.write_html(str(path), include_plotlyjs="directory")  # <script src="plotly.min.js">, written once
