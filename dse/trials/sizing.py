"""Trials sized to the machine: pick the training-set size so that about N trials fit in the study's timeout.

A fixed proxy budget (20k images x 2 epochs) trains eight points in nine minutes on a quiet 2-core machine
and one on a busy one. With `study.trials_per_timeout: N`, a fresh study first times a few training steps of
a typical point of its space (the median-FLOPs point of a seeded sample inside the budget, thinned like the
trials), on this machine as loaded right now, and lowers `data.subset` so that one trial takes about
timeout / N. When that size leaves a trial under MIN_STEPS optimizer steps, the batch size drops so the
nets still learn (a busy machine trains fewer images, not fewer steps). The chosen sizes are recorded in the
study's settings (dse.provenance), so a resumed study trains at the same sizes without measuring again. A `data.subset` typed on the command line is kept as given.
"""
from __future__ import annotations

import dataclasses
import random
import time

STEPS, WARMUP, EVAL_STEPS = 6, 2, 3
OVERHEAD_S = 4.0  # per trial: building the net, Lightning's set-up, the storage writes
RESERVE_S = 15.0  # of the timeout: the run's start-up and final reports
FLOOR, ROUND = 1000, 500
VAL_FLOOR = 2000  # validation samples kept at least (binomial std of 0.9 points at 80% accuracy)
MIN_STEPS, MIN_BATCH = 100, 16  # optimizer steps a trial needs to learn anything (batch_for)


def typical_point(space, seed: int = 0, n: int = 25):
    """The median-FLOPs point of `n` seeded draws inside the budget."""
    from dse.cost import complexity

    rng = random.Random(seed)
    points = [space.sample_with_values(rng, feasible=True)[0] for _ in range(n)]
    return sorted(points, key=lambda p: complexity(p).flops)[len(points) // 2]


def seconds_per_sample(point, data, recipe) -> tuple[float, float]:
    """Measured seconds of one sample of `point` on this machine: (training: forward, backward and SGD step;
    validation: forward only, in eval mode without gradients)."""
    import torch

    from dse.network import build

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
    train = (time.perf_counter() - start) / (STEPS * recipe.batch_size)
    model.eval()
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(EVAL_STEPS):
            model(x)
    return train, (time.perf_counter() - start) / (EVAL_STEPS * recipe.batch_size)


def subset_for(per_sample: float, per_trial: float, epochs: int, val_n: int, current: int,
               eval_per_sample: float | None = None) -> int:
    """The largest training-set size (a multiple of ROUND, at least FLOOR, at most `current`) that fits.

    Validation runs every epoch over `val_n` samples at `eval_per_sample` (measured; a third of a training
    sample's time when not given)."""
    per_eval = per_sample / 3 if eval_per_sample is None else eval_per_sample
    train_s = per_trial - OVERHEAD_S - epochs * val_n * per_eval
    fits = int(train_s / (epochs * per_sample)) if train_s > 0 else 0
    return max(min(current, fits // ROUND * ROUND), min(FLOOR, current))


def batch_for(size: int, epochs: int, batch: int) -> int:
    """The batch size that gives a trial of `size` samples x `epochs` at least MIN_STEPS optimizer steps: the
    largest power of two up to `batch` that does, at least MIN_BATCH (`batch` itself when it already does).

    Measured on Fashion-MNIST (resnext point 6f73ba4548, one-cycle, 2 epochs of 1,500 images): 24 steps at
    batch 128 reached 27% validation accuracy, 94 steps at batch 32 reached 71%; a quiet machine's 133 steps
    (8,500 images) reach 75-81%. A CPU spends about the same per sample at either batch size, so a busy
    machine's small trials keep enough steps to rank points."""
    if size * epochs // batch >= MIN_STEPS:
        return batch
    b = 1 << max(int(size * epochs // MIN_STEPS).bit_length() - 1, 0)
    return max(min(b, batch), min(MIN_BATCH, batch))


def val_for(size: int, val_n: int) -> int:
    """Validation samples for a training set of `size`: never more than it, at least VAL_FLOOR (at most all)."""
    return min(val_n, max(VAL_FLOOR, size))


def choose(space, data, recipe, thin: tuple, timeout: float, n: int, seed: int = 0,
           keep_batch: bool = False, keep_val: bool = False) -> tuple[int, int, int, str]:
    """(training-set size, validation size, batch size, one line saying why) for about `n` trials in
    `timeout` seconds.

    Validation runs every epoch; on a slow machine a full 6,000-image validation set would cost more than
    training 1,000 images, so it shrinks with the training set (val_for) unless `keep_val` (typed).

    The batch size drops (batch_for) when the size would leave a trial under MIN_STEPS steps, unless
    `keep_batch` (typed by the user). On a CPU a sample costs the same at batch 16 as at 128 (measured within
    10% here, 1 thread), so the size measured at the recipe's batch stands."""
    point = typical_point(space, seed).thinned(*thin)
    per_trial = (timeout - RESERVE_S) / n
    per_sample, per_eval = seconds_per_sample(point, data, recipe)
    val = len(data.val)
    size = subset_for(per_sample, per_trial, recipe.epochs, val, len(data.train), per_eval)
    if not keep_val and val_for(size, val) < val:  # solve again with the smaller validation set
        val = val_for(size, val)
        size = subset_for(per_sample, per_trial, recipe.epochs, val, len(data.train), per_eval)
    batch = recipe.batch_size if keep_batch else batch_for(size, recipe.epochs, recipe.batch_size)
    val = min(val, len(data.val))
    limit = getattr(recipe, "limit_batches", None)
    steps = train_steps(size, batch, limit) * recipe.epochs
    seconds = trial_seconds(size, val, batch, recipe.epochs, limit, per_sample, per_eval)
    fits = max(int((timeout - RESERVE_S) // seconds), 0)
    capped = f", at most {limit} batches per epoch" if limit and limit < max(size // batch, 1) else ""
    why = (f"sizing: {1e3 * per_sample:.2f} ms per training sample measured on a typical point; "
           f"{size} training samples x {recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''} at batch {batch} "
           f"({steps} steps{capped}), {val} validation samples: about {seconds:.0f} s per trial at that rate, "
           f"so about {fits} trials in {timeout:.0f} s"
           + (f" (fewer than the {n} asked: a trial trains at least {min(FLOOR, len(data.train))} samples)"
              if fits < n else ""))
    return size, val, batch, why


def train_steps(size: int, batch: int, limit: int | None) -> int:
    """Optimizer steps per epoch over `size` samples (full batches, at least one; at most `limit`)."""
    steps = max(size // batch, 1)
    return min(steps, limit) if limit else steps


def trial_seconds(size: int, val: int, batch: int, epochs: int, limit: int | None, per_sample: float,
                  per_eval: float) -> float:
    """One trial's predicted seconds at the measured rates: OVERHEAD_S, then per epoch the steps taken and one
    validation pass (batches of max(batch, 256), at most `limit` of them)."""
    trained = train_steps(size, batch, limit) * batch
    vbatch = max(batch, 256)
    scored = min(val, limit * vbatch) if limit else val
    return OVERHEAD_S + epochs * (trained * per_sample + scored * per_eval)


def with_subset(data, size: int, val: int | None = None):
    """The data with its training split cut to `size` samples and its validation split to `val` (both splits
    are already shuffled by the seed)."""
    from dse.train.datasets import Split

    if size < len(data.train):
        data = dataclasses.replace(data, train=Split(data.train.x[:size], data.train.y[:size]))
    if val and val < len(data.val):
        data = dataclasses.replace(data, val=Split(data.val.x[:val], data.val.y[:val]))
    return data
