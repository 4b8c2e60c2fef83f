"""The pruning callback a trial hands to dse.train.fit: Optuna's for a single-objective study, ε-dominance
(dse.trials.dominance) for a multi-objective study with `pruner: dominance`.

Both end a fit by raising dse.train.fit.Pruned (from a hook, or from `check_pruned()` after the fit), so the
training floor knows nothing of Optuna. dse.trials.objective imports this module inside a trial: it loads
Lightning.
"""
from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import optuna
from optuna.study import StudyDirection
from optuna_integration import PyTorchLightningPruningCallback

from dse.record import TrialRecord
from dse.train.fit import Paused, Pruned
from dse.trials import dominance, moasha
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


class MoashaCallback(pl.Callback):
    """Multi-objective successive halving at the rungs of `ladder` (epochs): record val/acc there, and go on
    only when the chain is in the top 1/eta of the chains recorded at that rung (dse.trials.moasha.goes_on);
    else write a checkpoint to `checkpoint(epoch)`, stop, and end the fit as Paused (check_pruned).

    A piece resumed from rung `from_rung` decides only at later rungs. Single-process fits (DDP is refused)."""

    def __init__(self, trial, ladder, eta: int, chain: int, checkpoint, from_rung: int = 0,
                 monitor: str = "val/acc"):
        self.trial, self.ladder, self.eta, self.chain = trial, tuple(ladder), int(eta), int(chain)
        self.checkpoint, self.from_rung, self.monitor = checkpoint, int(from_rung), monitor
        self.paused: tuple[int, str] | None = None

    def on_validation_end(self, trainer, pl_module):
        epoch = pl_module.current_epoch + 1
        if trainer.sanity_checking or epoch not in self.ladder or epoch <= self.from_rung:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        study = self.trial.study
        dominance.record(self.trial, epoch, float(value))
        attrs = self.trial.user_attrs
        keys = dominance.cost_keys(study, attrs)
        costs = [TrialRecord.from_attrs(attrs).objective(k) for k in keys]
        mine = [moasha.record(self.chain, epoch, float(value), *costs)] if None not in costs else []
        others = [r for r in moasha.from_trials(study.get_trials(deepcopy=False), keys) if r.trial != self.chain]
        if moasha.goes_on(others + mine, self.chain, epoch, self.eta):
            return
        path = Path(self.checkpoint(epoch)).resolve()  # absolute: workers in other folders read it too
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        trainer.save_checkpoint(part)
        os.replace(part, path)  # a kill mid-write leaves no half checkpoint under the real name
        self.paused = (epoch, str(path))
        trainer.should_stop = True

    def check_pruned(self) -> None:
        """After fit: raise Paused if the chain paused at a rung."""
        if self.paused is not None:
            epoch, path = self.paused
            raise Paused(f"paused at rung {epoch}: not in the top 1/{self.eta} of the trials recorded there")
