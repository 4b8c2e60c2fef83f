"""Analytic counting speed: points/s of dse.cost.measures (the family's graph, then params, FLOPs, activations
and receptive field from it) over seeded random points from every space, against building each point and
measuring one forward pass with FlopCounterMode and activation hooks (a subset).

    .venv/bin/python bench/complexity.py [--points 2000] [--measured 3]

Not a test: it prints a few lines; `points/s: N` is the analytic rate (the issue asks for >= 1,000) and the last
line is `ratio: X`, the measured seconds per point over the analytic ones on the same subset.
"""
from __future__ import annotations

import argparse
import random
import time

from dse.cost import measures
from dse.space import Infeasible, load, names


def sample_points(per_space: int, seed: int = 0) -> list:
    """Seeded random points from every shipped space: constraints not enforced, draws the space cannot turn into
    a point (Infeasible, e.g. a RegNet width rule giving too few stages) drawn again."""
    rng = random.Random(seed)
    points = []
    for name in names():
        space, drawn = load(name), []
        for _ in range(100 * per_space):
            if len(drawn) == per_space:
                break
            try:
                drawn.append(space.sample(rng, feasible=False))
            except Infeasible:
                pass
        points += drawn
    return points


def analytic_rate(points: list, repeats: int = 3) -> float:
    """Best points/s of measures() over the points."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for p in points:
            measures(p)
        best = min(best, time.perf_counter() - start)
    return len(points) / best


def measured(points: list) -> tuple[float, int]:
    """Seconds per point to build it and measure one forward pass (FlopCounterMode, activation hooks as in
    tests/test_measures.py), and how many points' measured params, FLOPs and activations equal measures()."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from dse.network import build

    counted = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d)
    adaptive = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    torch.set_num_threads(1)
    agree, start = 0, time.perf_counter()
    for p in points:
        model, acts = build(p).eval(), [0]

        def hook(module, inputs, output):
            if not isinstance(module, adaptive) or output.shape[-1] * output.shape[-2] > 1:
                acts[0] += output.numel()

        for m in model.modules():
            if isinstance(m, counted + adaptive):
                m.register_forward_hook(hook)
        with FlopCounterMode(display=False) as flops, torch.no_grad():
            model(torch.randn(1, p.in_chans, p.image_size, p.image_size))
        m = measures(p)
        params = sum(t.numel() for t in model.parameters())
        agree += (m.params, m.flops, m.acts) == (params, flops.get_total_flops() // 2, acts[0])
    return (time.perf_counter() - start) / len(points), agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2000, help="analytic points in all (split over the spaces)")
    parser.add_argument("--measured", type=int, default=3, help="built points per space for the comparison")
    args = parser.parse_args()
    spaces = names()
    points = sample_points(max(1, args.points // len(spaces)))
    rate = analytic_rate(points)
    start = time.perf_counter()
    sample_points(max(1, args.points // len(spaces)), seed=1)
    sample_rate = len(points) / (time.perf_counter() - start)
    subset = sample_points(args.measured, seed=2)
    built, agree = measured(subset)
    analytic = 1 / analytic_rate(subset)
    fields = [measures(p) for p in points]
    print(f"spaces: {len(spaces)} ({', '.join(spaces)})")
    print(f"analytic (params, FLOPs, activations, receptive field): {len(points)} points, {1e6 / rate:.0f} us/point;"
          f" sample + validate: {sample_rate:.0f} points/s")
    print(f"activations {min(m.acts for m in fields):,}-{max(m.acts for m in fields):,}; receptive field "
          f"{min(m.rf for m in fields)}-{max(m.rf for m in fields)} px")
    print(f"build + FlopCounterMode + activation hooks (1 thread, own geometry): {len(subset)} points, "
          f"{built * 1e3:.0f} ms/point; params, FLOPs and activations equal measures() on {agree}/{len(subset)}")
    print(f"points/s: {rate:.0f}")
    print(f"ratio: {built / analytic:.1f}")


if __name__ == "__main__":
    main()
