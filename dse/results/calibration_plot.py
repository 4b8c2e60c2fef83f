"""calibration.png: each budget's Kendall τ with its bootstrap 95% interval against its CPU-minutes (log x)."""
from __future__ import annotations

from pathlib import Path


def short(budget: str) -> str:
    """'data.subset=5000,trainer.max_epochs=2' -> 'subset=5000 max_epochs=2' (a point's label)."""
    return " ".join(item.split(".", 1)[-1] for item in budget.split(","))


def plot(results: list[dict], path: Path, title: str, target: float) -> Path:
    """Write the figure from calibrate's results (budget, cpu_minutes, tau, tau_lo, tau_hi, tau_vs_dearest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    shown = [r for r in results if r["cpu_minutes"] > 0 and (r["tau"] is not None or r["tau_vs_dearest"] is not None)]
    for r in shown:
        x = r["cpu_minutes"]
        if r["tau"] is not None:
            if r["tau_lo"] is not None:
                ax.vlines(x, r["tau_lo"], r["tau_hi"], color="C0", lw=2, alpha=0.6)
            ax.plot(x, r["tau"], "o", color="C0", ms=7)
        if r["tau_vs_dearest"] is not None:
            ax.plot(x, r["tau_vs_dearest"], "s", mfc="none", color="C1", ms=7)
        y = r["tau"] if r["tau"] is not None else r["tau_vs_dearest"]
        ax.annotate(f"{short(r['budget'])}\n{r['seeds']} seeds", (x, y), textcoords="offset points", xytext=(6, -4),
                    fontsize=8)
    ax.axhline(target, ls="--", color="gray", lw=1)
    ax.text(0.01, target, f" target τ {target:.2f}", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8,
            color="gray")
    ax.plot([], [], "o", color="C0", label="τ (dots) and its bootstrap 95% interval (bars)")
    ax.plot([], [], "s", mfc="none", color="C1", label="τ vs the dearest budget's ranking")
    if shown:  # log x, plain numbers, with room for the labels
        from matplotlib.ticker import FuncFormatter, NullFormatter

        xs = sorted({r["cpu_minutes"] for r in shown})
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.set_xscale("log")
        ax.set_xlim(xs[0] / 1.5, xs[-1] * 2.5)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain if xs[-1] / xs[0] < 10 else NullFormatter())  # < a decade: 2, 3, …
    ax.set_xlabel("CPU-minutes (measured, all seeds of the budget; log scale)")
    ax.set_ylabel("Kendall τ")
    ys = [v for r in shown for v in (r["tau"], r["tau_lo"], r["tau_vs_dearest"]) if v is not None]
    ax.set_ylim(min(ys + [0.0]) - 0.1, 1.08)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if not shown:
        ax.text(0.5, 0.5, "no budget trained yet", transform=ax.transAxes, ha="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
