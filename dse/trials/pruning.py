"""The pruning callback a trial hands to dse.train.fit: Optuna's for a single-objective study, ε-dominance
(dse.trials.dominance) for a multi-objective study with `pruner: dominance`.

Both end a fit by raising dse.train.fit.Pruned (from a hook, or from `check_pruned()` after the fit), so the
training floor knows nothing of Optuna. dse.trials.objective imports this module inside a trial: it loads
Lightning.
"""
from __future__ import annotations

import lightning.pytorch as pl
import optuna
from optuna.study import StudyDirection
from optuna_integration import PyTorchLightningPruningCallback

from dse.train.fit import Pruned
from dse.trials.dominance import DominancePruner, check


def callback(trial):
    """The pruning callback for `trial`'s study, or None (a multi-objective study without `pruner: dominance`).

    It watches the study's own objective: val/acc when the study maximizes accuracy, val/error when it
    minimizes error (fed accuracy, a minimizing pruner would stop the best trials).
    """
    study = trial.study
    if len(study.directions) > 1:
        return DominanceCallback(trial, study.pruner) if isinstance(study.pruner, DominancePruner) else None
    maximize = study.direction == StudyDirection.MAXIMIZE
    return OptunaPruning(trial, monitor="val/acc" if maximize else "val/error")


class OptunaPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, ending the fit with dse.train.fit.Pruned instead of optuna.TrialPruned."""

    def on_validation_end(self, trainer, pl_module):
        try:
            super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned as exc:
            raise Pruned(str(exc)) from None

    def check_pruned(self) -> None:
        """After fit, on rank 0: raise Pruned if the pruner stopped the trial (under DDP: read from the storage)."""
        try:
            super().check_pruned()
        except optuna.TrialPruned as exc:
            raise Pruned(str(exc)) from None


class DominanceCallback(pl.Callback):
    """Rank 0 records val/acc at each rung and decides (dse.trials.dominance.check, with the settings of the
    study's DominancePruner); every rank stops on its broadcast decision."""

    def __init__(self, trial, settings: DominancePruner, monitor: str = "val/acc"):
        self.trial, self.settings, self.monitor = trial, settings, monitor
        self.reason = None

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        stop = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                s = self.settings
                epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
                self.reason = check(self.trial, pl_module.current_epoch + 1, float(value), s.eps,
                                    s.min_trials, epochs, s.warmup)
                stop = self.reason is not None
        stop = trainer.strategy.broadcast(stop)  # the follower ranks join this (dse.train.ddp.Follower)
        if stop:
            trainer.should_stop = True

    def check_pruned(self) -> None:
        """After fit, on rank 0: raise Pruned if the rule stopped the trial."""
        if self.reason is not None:
            raise Pruned(self.reason)
