"""Analytic counting speed: points/s of dse.complexity over seeded random points from every space, and
its speedup over building each point and counting one forward with FlopCounterMode (a subset).

    .venv/bin/python bench/complexity.py [--points 2000] [--measured 3]

Not a test: it prints a few lines ending with `speedup: X` and `points/s: N`.
"""
from __future__ import annotations

import argparse
import random
import time

from dse.cost import complexity
from dse.space import load, names


def sample_points(per_space: int, seed: int = 0) -> list:
    """Seeded random points (constraints not enforced) from every shipped space."""
    rng = random.Random(seed)
    points = []
    for name in names():
        space = load(name)
        points += [space.sample(rng, feasible=False) for _ in range(per_space)]
    return points


def analytic_rate(points: list, repeats: int = 3) -> float:
    """Best points/s of complexity() over the points."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for p in points:
            complexity(p)
        best = min(best, time.perf_counter() - start)
    return len(points) / best


def measured_seconds(points: list) -> float:
    """Seconds per point to build it and count one forward pass with FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dse.network import build

    torch.set_num_threads(1)
    start = time.perf_counter()
    for p in points:
        model = build(p).eval()
        with FlopCounterMode(display=False), torch.no_grad():
            model(torch.randn(1, p.in_chans, p.image_size, p.image_size))
    return (time.perf_counter() - start) / len(points)


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
    built = measured_seconds(subset)
    analytic = 1 / analytic_rate(subset)
    print(f"spaces: {len(spaces)} ({', '.join(spaces)})")
    print(f"analytic: {len(points)} points, {1e6 / rate:.0f} us/point; sample + validate: {sample_rate:.0f} points/s")
    print(f"build + FlopCounterMode (1 thread, own geometry): {len(subset)} points, {built * 1e3:.0f} ms/point")
    print(f"speedup: {built / analytic:.0f}")
    print(f"points/s: {rate:.0f}")


if __name__ == "__main__":
    main()
