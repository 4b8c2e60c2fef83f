"""Seed noise: how far a point's validation accuracy moves when only its training seed changes, and which
neighbours on the Pareto front differ by less than that.

The estimate pools every point of the study trained with several seeds: a sampled point trained with
`study.seeds`, a grid cell's seeds, or the point the default study trains again with the next seed
(`study.noise_after`, dse.trials.sampling). Pooled over points i with n_i runs each,
s^2 = sum (n_i - 1) s_i^2 / sum (n_i - 1), with df = sum (n_i - 1) degrees of freedom. Its 95% interval takes
the noise as normal: s sqrt(df / chi2(0.975, df)) to s sqrt(df / chi2(0.025, df)); with one repeated point
(df = 1) that is 0.45 s to 31.9 s, so one repeat tells the order of the noise and no more, and the words say so.

Two neighbours on the front (cheapest first) tie when their mean accuracies differ by less than TIE_Z times the
standard deviation of that difference, s sqrt(1/n_a + 1/n_b) (n: the runs behind each mean). The front lists
a tied point with '≈' and does not rank it above the cheaper one.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

TIE_Z = 2.0  # a difference under 2 standard deviations of itself (about 95% two-sided) is not a ranking
TIE = "≈"


@dataclass(frozen=True)
class Noise:
    """A pooled seed-noise estimate of validation accuracy (fractions, not percent)."""

    sigma: float  # pooled standard deviation over seeds
    points: int  # points trained with several seeds
    runs: int  # their trainings in all
    df: int  # degrees of freedom: runs - points

    def interval(self) -> tuple[float, float]:
        """The 95% interval of sigma (chi-square, normal noise)."""
        from scipy.stats import chi2

        return (self.sigma * math.sqrt(self.df / chi2.ppf(0.975, self.df)),
                self.sigma * math.sqrt(self.df / chi2.ppf(0.025, self.df)))

    def basis(self) -> str:
        """What the estimate rests on: '1 repeated point, 2 seeds; 1 degree of freedom: 95% interval ...'."""
        lo, hi = self.interval()
        what = (f"{self.points} repeated point, {self.runs} seeds" if self.points == 1
                else f"{self.points} repeated points, {self.runs} runs")
        dof = f"{self.df} degree{'s' if self.df > 1 else ''} of freedom"
        rough = "; a rough estimate: it tells the noise's order, no more" if self.df < 5 else ""
        return f"{what}; {dof}: 95% interval {100 * lo:.2f} to {100 * hi:.2f} points{rough}"

    def words(self) -> str:
        """'seed noise: ±0.80 points of validation accuracy (1 repeated point, 2 seeds; ...)'."""
        return f"seed noise: ±{100 * self.sigma:.2f} points of validation accuracy ({self.basis()})"


UNKNOWN = ("seed noise: not measured (every point was trained with one seed; study.noise_after=K trains one point "
           "again with another seed, study.seeds=N trains each point N times); front differences may be noise")


def _runs(row: dict) -> int:
    return int(row.get("seeds") or 1)


def _ok(table: list[dict]) -> list[dict]:
    return [r for r in table if r.get("status") == "ok" and r.get("accuracy") not in (None, "")]


def _groups(table: list[dict]) -> dict[str, list[dict]]:
    """Trained rows by point id (a row without one is its own point)."""
    out: dict[str, list[dict]] = {}
    for r in _ok(table):
        out.setdefault(str(r.get("point_id") or f"#{r['number']}"), []).append(r)
    return out


def estimate(table: list[dict]) -> Noise | None:
    """The pooled estimate from trials.csv rows (None: no point was trained with several seeds)."""
    squares, df, points, runs = 0.0, 0, 0, 0
    for rows in _groups(table).values():
        once = [100 * float(r["accuracy"]) for r in rows if _runs(r) == 1]
        k_df = max(len(once) - 1, 0)
        k_sq = sum((a - statistics.fmean(once)) ** 2 for a in once) if k_df else 0.0
        for r in rows:  # a trial that trained several seeds itself (study.seeds): its own spread
            n = _runs(r)
            if n > 1 and r.get("val_acc_std") not in (None, ""):
                k_sq += (n - 1) * (100 * float(r["val_acc_std"])) ** 2
                k_df += n - 1
        if k_df:
            squares, df, points = squares + k_sq, df + k_df, points + 1
            runs += sum(_runs(r) for r in rows)
    if not df:
        return None
    return Noise(sigma=math.sqrt(squares / df) / 100, points=points, runs=runs, df=df)


def front_rows(front: list[dict], table: list[dict], noise: Noise | None) -> list[dict]:
    """The front, cheapest first, one entry per point: {number, point_id, flops, accuracy (the mean over its
    runs), runs, tie}; `tie` is True when its accuracy is within seed noise of the entry before it."""
    groups = _groups(table)
    out, seen = [], set()
    for r in sorted(front, key=lambda r: (float(r["flops"]), -float(r["accuracy"]))):
        key = str(r.get("point_id") or f"#{r['number']}")
        if key in seen:
            continue
        seen.add(key)
        rows = groups.get(key, [r])
        n = sum(_runs(x) for x in rows)
        acc = sum(_runs(x) * float(x["accuracy"]) for x in rows) / n
        out.append({"number": r["number"], "point_id": r.get("point_id"), "flops": float(r["flops"]),
                    "accuracy": acc, "runs": n, "tie": False})
    if noise is not None:
        for prev, cur in zip(out, out[1:]):
            spread = noise.sigma * math.sqrt(1 / prev["runs"] + 1 / cur["runs"])
            cur["tie"] = abs(cur["accuracy"] - prev["accuracy"]) < TIE_Z * spread
    return out


def ties_words(rows: list[dict]) -> str:
    """What the '≈' marks mean, and how many there are."""
    tied = sum(r["tie"] for r in rows)
    return (f"{TIE} marks a point within seed noise of the cheaper point before it (under {TIE_Z:g} standard "
            f"deviations of the difference), not ranked above it: {tied} of {len(rows)} front points")
