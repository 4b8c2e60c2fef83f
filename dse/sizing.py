"""Trials sized to the machine: pick the training-set size so that about N trials fit in the study's timeout.

A fixed proxy budget (20k images x 2 epochs) trains eight points in nine minutes on a quiet 2-core machine
and one on a busy one. With `study.trials_per_timeout: N`, a fresh study first times a few training steps of
a typical point of its space (the median-FLOPs point of a seeded sample inside the budget, thinned like the
trials), on this machine as loaded right now, and lowers `data.subset` so that one trial takes about
timeout / N. The chosen size is recorded in the study's settings (dse.provenance), so a resumed study trains
at the same size without measuring again. A `data.subset` typed on the command line is kept as given.
"""
from __future__ import annotations

import dataclasses
import random
import time

STEPS, WARMUP = 6, 2
OVERHEAD_S = 4.0  # per trial: building the net, Lightning's set-up, the storage writes
RESERVE_S = 15.0  # of the timeout: the run's start-up and final reports
FLOOR, ROUND = 1000, 500


def typical_point(space, seed: int = 0, n: int = 25):
    """The median-FLOPs point of `n` seeded draws inside the budget."""
    from dse.count import complexity

    rng = random.Random(seed)
    points = [space.sample_with_values(rng, feasible=True)[0] for _ in range(n)]
    return sorted(points, key=lambda p: complexity(p).flops)[len(points) // 2]


def seconds_per_sample(point, data, recipe) -> float:
    """Measured seconds of one training sample (forward, backward, SGD step) of `point` on this machine."""
    import torch

    from dse.arch import build

    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    model = build(point, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(recipe.batch_size, data.in_chans, data.image_size, data.image_size)
    y = torch.randint(0, data.num_classes, (recipe.batch_size,))
    loss_fn = torch.nn.CrossEntropyLoss()
    start = None
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / (STEPS * recipe.batch_size)


def subset_for(per_sample: float, per_trial: float, epochs: int, val_n: int, current: int) -> int:
    """The largest training-set size (a multiple of ROUND, at least FLOOR, at most `current`) that fits."""
    train_s = per_trial - OVERHEAD_S - epochs * val_n * per_sample / 3  # validation: forward only
    fits = int(train_s / (epochs * per_sample)) if train_s > 0 else 0
    return max(min(current, fits // ROUND * ROUND), min(FLOOR, current))


def choose(space, data, recipe, thin: tuple, timeout: float, n: int, seed: int = 0) -> tuple[int, str]:
    """(training-set size, one line saying why) for about `n` trials in `timeout` seconds."""
    point = typical_point(space, seed).thinned(*thin)
    per_sample = seconds_per_sample(point, data, recipe)
    per_trial = (timeout - RESERVE_S) / n
    current = len(data.train)
    size = subset_for(per_sample, per_trial, recipe.epochs, len(data.val), current)
    why = (f"sizing: {1e3 * per_sample:.2f} ms per training sample measured on a typical point; "
           f"{size} training samples x {recipe.epochs} epochs for about {n} trials in {timeout:.0f} s")
    return size, why


def with_subset(data, size: int):
    """The data with its training split cut to `size` samples (the split is already shuffled by the seed)."""
    from dse.datasets import Split

    if size >= len(data.train):
        return data
    return dataclasses.replace(data, train=Split(data.train.x[:size], data.train.y[:size]))
