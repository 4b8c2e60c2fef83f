"""Multi-objective pruning by ε-dominance at a rung (Optuna prunes single-objective studies only, optuna#3450).

In dse every cost objective (FLOPs, params, ...) is exact before training; only accuracy depends on the
epoch. So at each rung (the end of epoch k, after validation) a trial can be compared with every trial
already seen at that rung: it is pruned when one of them has accuracy >= its own + eps AND no more of
every cost objective. Such a trial cannot reach the Pareto front unless its accuracy later overtakes the
other's (eps is the margin allowed for that; see `EPS`).

Rung records: a trial stores its accuracy at rung k as the trial system attribute `dse:rung:<k>` (the
costs are its `flops`/`params` user attributes, set before training). A check reads every trial of the
study once: O(trials) per epoch, which is negligible next to an epoch of training at dse's study sizes
(hundreds to a few thousand trials); a much larger study would want an index per rung.

The rule is not applied before `min_trials` other trials have recorded the rung, nor in the first `warmup`
share of the epochs (early accuracy under a warm-up or one-cycle schedule says little about the final one:
see `WARMUP`), nor at the last epoch (stopping there saves nothing and would only throw the result away).

Wiring: `pruner: dominance` in a study (multi-objective, with a cost objective). The study's Optuna pruner is
a `DominancePruner` (a NopPruner that carries the settings: Optuna itself never prunes), and the trial hands
dse.train.fit the Lightning callback `dse.trials.pruning.DominanceCallback`, which calls `check` after every
validation. Under DDP only rank 0 reads and writes the storage; it broadcasts its decision after every
validation, and the follower ranks (`dse.train.ddp.follower_callback`) join that broadcast and stop with it,
exactly as with Optuna's own pruning callback.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import optuna

from dse.record import TrialRecord

RUNG = "dse:rung:"  # + epoch number (1-based): the trial's validation accuracy after that epoch
QUALITY = ("accuracy", "error")  # the study's objectives that are not costs
COSTS = ("flops", "params", "acts")  # cost attributes compared when the study names none
# Defaults. eps = 0: a trial is pruned as soon as another one is at least as accurate at this rung at no more
# cost (ties in accuracy prune the later trial). A positive eps (e.g. 0.01: one accuracy point) keeps
# trials that are slightly behind early, for schedules whose ranking still changes after the first rungs.
EPS = 0.0
MIN_TRIALS = 1  # other trials that must have recorded the rung before the rule may prune there
WARMUP = 0.5  # no pruning before epoch ceil(WARMUP x epochs): with 4 epochs the rule runs at epochs 2 and 3


def dominates(acc: float, costs: Mapping, other_acc: float, other_costs: Mapping, eps: float = EPS) -> bool:
    """Does the other trial (other_acc, other_costs) ε-dominate this one at a rung?

    True when other_acc >= acc + eps and, for every cost named in `costs`, the other's value is <= this
    trial's. A cost missing (or None) on either side never prunes: without the number there is no proof.
    """
    if other_acc is None or acc is None or not math.isfinite(other_acc) or not math.isfinite(acc):
        return False
    if other_acc < acc + eps:
        return False
    for key, mine in costs.items():
        theirs = other_costs.get(key)
        if mine is None or theirs is None or float(theirs) > float(mine):
            return False
    return True


def dominator(acc: float, costs: Mapping, others: Iterable[tuple], eps: float = EPS,
              min_trials: int = MIN_TRIALS):
    """The first `(number, acc, costs)` of `others` that ε-dominates (acc, costs), or None.

    None also while fewer than `min_trials` others are given (the warm-up). An empty `costs` is refused:
    with no cost to compare, dominance would prune everything but the most accurate trial.
    """
    if not costs:
        raise ValueError("dominance needs at least one cost objective (flops, params, ...)")
    others = list(others)
    if len(others) < max(min_trials, 1):
        return None
    for other in others:
        if dominates(acc, costs, other[1], other[2], eps):
            return other
    return None


# ----- rung records in the Optuna storage -----

def key(epoch: int) -> str:
    """The system attribute of the accuracy at rung `epoch`."""
    return f"{RUNG}{int(epoch)}"


def record(trial, epoch: int, acc: float) -> None:
    """Store this trial's accuracy at rung `epoch` (rank 0 only under DDP)."""
    trial.storage.set_trial_system_attr(trial._trial_id, key(epoch), float(acc))


def rung(trial) -> dict[int, float]:
    """A (frozen) trial's rung records: {epoch: accuracy}."""
    return {int(k[len(RUNG):]): v for k, v in trial.system_attrs.items() if k.startswith(RUNG)}


def records(trials: Iterable, epoch: int, cost_keys: Iterable[str], skip: int | None = None) -> list[tuple]:
    """(number, accuracy, costs) of every trial that recorded rung `epoch`, except trial number `skip`."""
    name, cost_keys = key(epoch), tuple(cost_keys)
    out = []
    for t in trials:
        if t.number == skip or name not in t.system_attrs:
            continue
        costs = TrialRecord.from_trial(t)
        out.append((t.number, float(t.system_attrs[name]), {k: costs.objective(k) for k in cost_keys}))
    return out


def cost_keys(study, attrs: Mapping) -> tuple[str, ...]:
    """The study's cost objectives (its `objectives` user attribute minus accuracy/error); for a study
    that does not name them, every cost attribute the trial has (comparing more costs prunes less)."""
    names = study.user_attrs.get("objectives")
    if names:
        return tuple(o for o in names if o not in QUALITY)
    return tuple(k for k in COSTS if k in attrs)


def first_rung(epochs: int, warmup: float = WARMUP) -> int:
    """The first epoch at which a fit of `epochs` epochs may be pruned."""
    return max(1, math.ceil(warmup * epochs - 1e-9))


def check(trial, epoch: int, acc: float, eps: float = EPS, min_trials: int = MIN_TRIALS,
          epochs: int | None = None, warmup: float = WARMUP) -> str | None:
    """Record rung `epoch` for `trial`, then the reason to prune it, or None (always None before
    first_rung(epochs, warmup) and at the last epoch; `epochs` None: no such limits)."""
    record(trial, epoch, acc)
    if epochs is not None and not first_rung(epochs, warmup) <= epoch < epochs:
        return None
    mine = TrialRecord.from_trial(trial)
    names = cost_keys(trial.study, mine.to_attrs())
    costs = {k: mine.objective(k) for k in names}
    others = records(trial.study.get_trials(deepcopy=False), epoch, names, skip=trial.number)
    found = dominator(acc, costs, others, eps, min_trials)
    if found is None:
        return None
    return (f"dominated at epoch {epoch} by trial {found[0]}: accuracy {found[1]:.4f} >= {acc:.4f}"
            f"{f' + {eps:g}' if eps else ''} at no more {', '.join(names)}")


class DominancePruner(optuna.pruners.NopPruner):
    """The study's pruner under `pruner: dominance`: Optuna never prunes; dse.trials.pruning's callback reads these
    settings."""

    def __init__(self, eps: float = EPS, min_trials: int = MIN_TRIALS, warmup: float = WARMUP):
        super().__init__()
        if not eps >= 0 or not 0 <= warmup <= 1:
            raise ValueError(f"dominance: eps must be >= 0 and warmup in [0, 1], got {eps}, {warmup}")
        self.eps, self.min_trials, self.warmup = float(eps), int(min_trials), float(warmup)
