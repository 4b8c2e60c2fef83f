"""One trial on several devices with Lightning DDP: only rank 0 talks to the Optuna storage.

Lightning's DDP launcher starts ranks 1..K-1 by running the same command again (`python -m dse.search …`)
with LOCAL_RANK set. Those re-runs must not ask Optuna for trials of their own. Before each fit, rank 0
puts the point it trains, the seed and whether a pruner runs into the environment (`share`); a re-run that
finds them (`is_follower`) loads the same data, trains that point in step with rank 0 and exits (`follow`),
never opening the storage. Rank 0's pruning callback broadcasts its decision after every validation; a
follower takes part in that broadcast (`Follower`), so every rank stops together.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

from dse.point import Point

POINT, SEED, PRUNE = "DSE_DDP_POINT", "DSE_DDP_SEED", "DSE_DDP_PRUNE"
SIZE = "DSE_DDP_SIZE"  # "<training samples>,<validation samples>,<batch size>" of rank 0's fit


def is_follower() -> bool:
    """Is this process a DDP rank > 0 that Lightning started for rank 0's trial?"""
    return POINT in os.environ and int(os.environ.get("LOCAL_RANK", "0") or 0) > 0


# What Lightning's launcher writes into rank 0's own environment. Left there, the next trial's Trainer would
# believe an outside launcher made its ranks (LOCAL_RANK is set) and wait for ranks that never start.
LAUNCHER_KEYS = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def share(point, seed: int, prune: bool, size: tuple[int, int, int] | None = None):
    """During rank 0's fit: the environment that the ranks Lightning starts will read; afterwards the
    environment as it was (so each trial launches its own ranks). `size`: rank 0's (training samples,
    validation samples, batch size), which a study's sizing may have cut below what the command line says."""
    values = {POINT: point.to_json(), SEED: str(seed), PRUNE: "1" if prune else "0"}
    if size is not None:
        values[SIZE] = ",".join(str(int(v)) for v in size)
    old = {k: os.environ.get(k) for k in (*values, *LAUNCHER_KEYS)}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def follow(fit, data, recipe) -> int:
    """Train rank 0's point as a follower rank with `fit` (dse.train.fit.fit; no storage, no loggers, no progress);
    exit code. The fit comes from the caller, so this module stays below dse.train.fit (which calls `share`)."""
    import json

    point = Point.from_dict(json.loads(os.environ[POINT]))
    recipe = dataclasses.replace(recipe, seed=int(os.environ.get(SEED, "0")))
    if os.environ.get(SIZE):  # rank 0's sized data and batch: every rank takes the same steps
        data, recipe = sized_as_rank_0(data, recipe, *(int(v) for v in os.environ[SIZE].split(",")))
    callbacks = [follower_callback()] if os.environ.get(PRUNE) == "1" else []
    fit(point, data, recipe, logger=None, callbacks=callbacks, progress=False)
    return 0


def sized_as_rank_0(data, recipe, train: int, val: int, batch: int):
    """`data` cut to rank 0's training and validation samples (both splits are already seeded shuffles, so
    their first samples are rank 0's) and `recipe` at rank 0's batch size."""
    from dse.train.datasets import Split

    cut = {}
    for name, n in (("train", train), ("val", val)):
        split = getattr(data, name)
        if isinstance(split, Split) and n < len(split):
            cut[name] = Split(split.x[:n], split.y[:n])
    return (dataclasses.replace(data, **cut) if cut else data), dataclasses.replace(recipe, batch_size=batch)


def follower_callback():
    """A callback that joins rank 0's pruning broadcast after each validation and stops when it says so."""
    import lightning.pytorch as pl

    class Follower(pl.Callback):
        """Rank > 0 side of the pruning callback's `broadcast(should_stop)`."""

        pruned = False

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            stop = trainer.strategy.broadcast(False)  # rank 0's value wins
            if stop:
                self.pruned = True
                trainer.should_stop = True

    return Follower()
