"""Feasibility before training: how much of a space (or a grid) the study's budget admits, from analytic counts.

Before the first trial, dse samples the space (cheap: no network is built) and reports the share of points
within the budget. When the budget admits none, the study stops before touching its storage, with one line
naming the bound, the closest point's cost and the override that would admit it. A grid whose cells break
the budget says so before it runs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from dse.cost import complexity, measures
from dse.errors import Infeasible, UserError

SAMPLES = 256


@dataclass(frozen=True)
class Survey:
    """`feasible` of `n` sampled points are within the budget; `closest` is the least-violating point's counts."""

    n: int
    feasible: int
    closest: dict | None  # {'flops.max': (count, bound), ...}: the bounds the closest point breaks

    @property
    def share(self) -> float:
        """Fraction of sampled points within the budget."""
        return self.feasible / self.n if self.n else 0.0


def survey(space, n: int = SAMPLES, seed: int = 0) -> Survey:
    """Sample `n` points of the space (values that break its checks are skipped) and test them against the budget."""
    rng = random.Random(seed)
    feasible, drawn, best, closest = 0, 0, None, None
    for _ in range(n * 4):
        if drawn == n:
            break
        try:
            point = space.point(space.sample_values(rng))
        except Infeasible:
            continue
        drawn += 1
        over = space.violations(point)
        worst = max(over.values(), default=0.0)
        if worst <= 0:
            feasible += 1
        elif best is None or worst < best:
            counts = measures(point)._asdict()
            best = worst
            closest = {k: (counts[k.split(".")[0]], _bound(space, point, k)) for k, v in over.items() if v > 0}
    return Survey(n=drawn, feasible=feasible, closest=closest)


def _bound(space, point, key: str) -> float:
    """The value of bound 'flops.max' (or 'params.min', ...) at the point's geometry."""
    name, side = key.split(".")
    return space.bounds(point)[name][0 if side == "min" else 1]


def describe(space) -> str:
    """'flops <= 1e+07, params <= 1.5e+06' for the space's budget."""
    parts = []
    for key, bound in space.constraints.items():
        if bound.get("min") is not None:
            parts.append(f"{key} >= {bound['min']:.3g}")
        if bound.get("max") is not None:
            parts.append(f"{key} <= {bound['max']:.3g}")
    return ", ".join(parts) or "no budget"


def check_space(space, say=print) -> Survey | None:
    """Report the admitted share; a UserError (nothing written) when the budget admits no sampled point."""
    if not space.constraints:
        return None
    found = survey(space)
    if found.n and found.feasible == 0:
        raise UserError(f"budget: none of {found.n} sampled points of space {space.name!r} is within "
                        f"{describe(space)}; {_admit(found.closest)}")
    if found.n:
        say(f"space {space.name}: {100 * found.share:.0f}% of {found.n} sampled points are within the budget "
            f"({describe(space)})")
    return found


def _admit(closest: dict | None) -> str:
    """'the closest has flops 1.055e+07; admit it with study.constraints.flops.max=1.1e+07'."""
    if not closest:
        return "widen the constraints (study.constraints.<flops|params>.<min|max>=…)"
    have = ", ".join(f"{k.split('.')[0]} {count:.4g}" for k, (count, _) in closest.items())
    fixes = " ".join(f"study.constraints.{k}={_round_out(count, k.endswith('max')):.2g}"
                     for k, (count, _) in closest.items())
    return f"the closest sampled point has {have}; admit it with {fixes}"


def _round_out(value: float, up: bool) -> float:
    """A two-significant-digit value just past `value` (above for a max bound, below for a min)."""
    from math import floor, log10

    scale = 10 ** (floor(log10(abs(value))) - 1) if value else 1
    steps = value / scale
    return (int(steps) + 1) * scale if up else max(int(steps) - 1, 1) * scale


def check_cells(space, cells: dict, say=print) -> None:
    """Name the grid cells over the budget; a UserError when every cell is (nothing would be trained)."""
    if space is None or not space.constraints:
        return
    over = {label: v for label, p in cells.items() if max((v := space.violations(_at(space, p))).values(),
                                                            default=0) > 0}
    if not over:
        return
    if len(over) == len(cells):
        label = min(cells, key=lambda lb: complexity(_at(space, cells[lb])).flops)
        flops = complexity(_at(space, cells[label])).flops
        raise UserError(f"budget: all {len(cells)} grid cells are over the budget of space {space.name!r} "
                        f"({describe(space)}); the cheapest, {label!r}, has {flops / 1e6:.4g} MFLOPs; give the "
                        "study's own space, or widen study.constraints")
    say(f"budget: {len(over)} of {len(cells)} grid cells are over {describe(space)} and will not be trained: "
        + ", ".join(list(over)[:8]) + (" …" if len(over) > 8 else ""))


def _at(space, point):
    """The point at the space's geometry."""
    geometry = dict(space.geometry)
    return point.replace(**{k: geometry[k] for k in ("image_size", "in_chans", "num_classes") if k in geometry})
