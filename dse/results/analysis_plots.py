"""The PNG figures of dse.analyze (matplotlib, Agg): EDFs, trends, importance."""
from __future__ import annotations

import math
from pathlib import Path

COLORS = ["#1f77b4", "#d1495b", "#2a9d8f", "#e9c46a", "#6a4c93", "#f4a261", "#264653", "#8d99ae"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def edf_png(path: Path, analysis) -> None:
    """Normalized EDF per group (solid, 95% bootstrap band) and the plain EDF (dashed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for k, g in enumerate(analysis.groups):
        c = analysis.curves[g]
        color = COLORS[k % len(COLORS)]
        x = 100 * c["grid"]
        ax.fill_between(x, c["lo"], c["hi"], color=color, alpha=0.15, step="post", lw=0)
        ax.step(x, c["normalized"], where="post", color=color, lw=1.8, label=f"{g} (n={c['n']})")
        if analysis.measure != "none":
            ax.step(x, c["plain"], where="post", color=color, lw=0.9, ls="--")
    ks = analysis.ks_rows
    title = "error EDF" + ("" if analysis.measure == "none" else f", normalized by {analysis.measure}")
    if len(ks) == 1:
        title += f"; KS {ks[0]['ks']:.3f}"
    ax.set_title(title + ("\n(dashed: plain EDF; bands: 95% bootstrap)" if analysis.measure != "none" else ""),
                 fontsize=10)
    ax.set_xlabel("validation error (%)")
    ax.set_ylabel("cumulative fraction of models")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def trends_png(path: Path, analysis) -> None:
    """One panel per parameter: median error (dashed) and bootstrap min with its 95% interval, per group."""
    plt = _plt()
    params = list(dict.fromkeys(r["param"] for r in analysis.trend_rows))
    cols = min(4, max(1, len(params)))
    rows = max(1, math.ceil(len(params) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[len(params):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, params):
        for k, g in enumerate(analysis.groups):
            mine = [r for r in analysis.trend_rows if r["param"] == name and r["group"] == g]
            if not mine:
                continue
            color = COLORS[k % len(COLORS)]
            x = list(range(len(mine)))
            mid = [100 * r["boot_min"] for r in mine]
            err = [[max(0.0, 100 * (r["boot_min"] - r["boot_min_lo"])) for r in mine],
                   [max(0.0, 100 * (r["boot_min_hi"] - r["boot_min"])) for r in mine]]
            ax.errorbar(x, mid, yerr=err, color=color, marker="o", ms=3, lw=1, capsize=2, label=g)
            ax.plot(x, [100 * r["median_error"] for r in mine], color=color, ls="--", lw=0.8)
            ax.set_xticks(x)
            ax.set_xticklabels([str(r["value"]) for r in mine], fontsize=7, rotation=30 if len(mine) > 5 else 0)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if params:
        axes.flat[0].set_ylabel("error (%)", fontsize=8)
        axes.flat[0].legend(fontsize=6)
    fig.suptitle("error trends: bootstrap min with 95% interval (solid), median (dashed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def importance_png(path: Path, analysis) -> None:
    """Horizontal bars of fANOVA and PED-ANOVA importance, one panel per study."""
    plt = _plt()
    studies = list(dict.fromkeys(r["study"] for r in analysis.importance_rows)) or ["(too few trials)"]
    fig, axes = plt.subplots(1, len(studies), figsize=(4.2 * len(studies), 0.35 * max(
        [sum(r["study"] == s for r in analysis.importance_rows) for s in studies] + [4]) + 1.2), dpi=110,
        squeeze=False)
    for ax, s in zip(axes.flat, studies):
        mine = [r for r in analysis.importance_rows if r["study"] == s][::-1]
        y = list(range(len(mine)))
        ax.barh([v - 0.2 for v in y], [r["fanova"] or 0 for r in mine], height=0.4, color=COLORS[0], label="fANOVA")
        ax.barh([v + 0.2 for v in y], [r["ped_anova"] or 0 for r in mine], height=0.4, color=COLORS[1],
                label="PED-ANOVA")
        ax.set_yticks(y)
        ax.set_yticklabels([r["param"] for r in mine], fontsize=7)
        ax.set_title(f"{s}: importance for low error", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="x")
        if mine:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
