"""The pruning callback a trial hands to dse.train.fit: Optuna's for a single-objective study, ε-dominance
(dse.trials.dominance) for a multi-objective study with `pruner: dominance`.

Both end a fit by raising dse.train.fit.Pruned (from a hook, or from `check_pruned()` after the fit), so the
training floor knows nothing of Optuna. dse.trials.objective imports this module inside a trial: it loads
Lightning.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import lightning.pytorch as pl
import optuna
from optuna.study import StudyDirection
from optuna_integration import PyTorchLightningPruningCallback

from dse.record import TrialRecord
from dse.train import rungs
from dse.train.fit import Paused, Pruned
from dse.trials import dominance, moasha
from dse.trials.dominance import DominancePruner, check

BRANCHES = "rung_branches"  # user attribute of a moasha piece under wsd: {rung epoch: its decay branch's record}


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
    """Multi-objective successive halving at the rungs of `ladder` (epochs): record the rung's score, and go
    on only when the chain is in the top 1/eta of the chains recorded at that rung (dse.trials.moasha.goes_on);
    else write a checkpoint to `checkpoint(epoch)`, stop, and end the fit as Paused (check_pruned).

    `score` "train_loss" (the default): the rung's score is minus the epoch's mean training loss, which costs
    nothing extra. At proxy fidelity it ranks points like the end far better than the validation accuracy
    there (Spearman rho 0.62 against -0.01 after the first of 3 epochs: bench/data/rung_rho_nds_resnext_w3.txt).
    "val_acc": val/acc in place, except under the wsd schedule before its own decay: there it is the accuracy
    after a discarded decay branch of `decay` x (steps so far) steps (dse.train.rungs.score), whose steps and CPU
    seconds go to the trial's user attribute `rung_branches`.
    A piece resumed from rung `from_rung` decides only at later rungs. Single-process fits (DDP is refused)."""

    def __init__(self, trial, ladder, eta: int, chain: int, checkpoint, from_rung: int = 0,
                 monitor: str = "val/acc", decay: float = rungs.DECAY, score: str = moasha.RUNG_SCORE):
        if score not in ("train_loss", "val_acc"):
            raise ValueError(f"moasha: rung score must be train_loss or val_acc, got {score!r}")
        self.trial, self.ladder, self.eta, self.chain = trial, tuple(ladder), int(eta), int(chain)
        self.score = score
        self.checkpoint, self.from_rung, self.monitor, self.decay = checkpoint, int(from_rung), monitor, decay
        self.paused: tuple[int, str] | None = None
        self.branches: dict[str, dict] = {}
        self._decay_start: int | None = None

    def on_fit_start(self, trainer, pl_module):
        self.branches = {}
        self._decay_start = rungs.decay_start(pl_module.recipe, int(trainer.estimated_stepping_batches))
        if BRANCHES in self.trial.user_attrs:  # a piece queued again after a kill: its predecessor's branches
            self.trial.set_user_attr(BRANCHES, {})

    def on_validation_end(self, trainer, pl_module):
        epoch = pl_module.current_epoch + 1
        if trainer.sanity_checking or epoch not in self.ladder or epoch <= self.from_rung:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = -pl_module.mean_train_loss() if self.score == "train_loss" else \
            self.rung_score(trainer, pl_module, epoch, float(value))
        study = self.trial.study
        dominance.record(self.trial, epoch, value)
        attrs = self.trial.user_attrs
        keys = dominance.cost_keys(study, attrs)
        costs = [TrialRecord.from_attrs(attrs).objective(k) for k in keys]
        mine = [moasha.record(self.chain, epoch, value, *costs)] if None not in costs else []
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

    def rung_score(self, trainer, pl_module, epoch: int, in_place: float) -> float:
        """The accuracy that ranks this rung: after a decay branch under wsd (recorded in `rung_branches`), else
        `in_place`."""
        decay = self.decay if pl_module.recipe.schedule == "wsd" else 0.0
        steps = rungs.branch_steps(trainer.global_step, decay, self._decay_start)
        if not steps:
            return in_place
        cpu, wall = time.process_time(), time.perf_counter()
        seed = rungs.branch_seed(int(pl_module.recipe.seed), self.ladder.index(epoch))
        acc, loss = rungs.score(trainer, pl_module, steps, seed)
        self.branches[str(epoch)] = {"acc": acc, "loss": loss, "in_place": in_place, "steps": steps,
                                     "step": trainer.global_step, "cpu_seconds": time.process_time() - cpu,
                                     "seconds": time.perf_counter() - wall}
        self.trial.set_user_attr(BRANCHES, dict(self.branches))
        return acc

    def check_pruned(self) -> None:
        """After fit: raise Paused if the chain paused at a rung."""
        if self.paused is not None:
            epoch, path = self.paused
            raise Paused(f"paused at rung {epoch}: not in the top 1/{self.eta} of the trials recorded there")
