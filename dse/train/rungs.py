"""Rung scores: at given shares of a fit's steps, score the network as if its training ended there.

`RungScores(rungs, decay=0.2)` is a Lightning callback for `dse.train.fit.fit`. At each rung (a share of all
optimizer steps, e.g. 1/9, 1/3) it copies the model and the optimizer's state, trains the copy for a short
branch whose lr falls linearly from the current lr to 0 over `decay` x (steps so far) steps, scores it on the
validation batches, and discards it; the main fit continues from its own, untouched state. Under a
warmup-stable-decay schedule (`trainer.schedule=wsd`) this is the score the trial would have had if its
budget had ended at the rung. A rung inside the main decay, or with `decay=0`, is scored in place (no branch).

The branch draws its own seeded batches and runs inside a forked RNG, so the main fit ends with the same
weights as a fit without rungs, and two fits with the same seed give the same scores. The branch's steps and
CPU seconds are recorded: they are compute the trial spent. Each rung's record goes to `on_score` (if given);
raising `dse.train.fit.Pruned` there stops the fit as pruned. Single-process fits only (DDP is refused).

`branch_steps` and `score` are the branch itself, as functions: `dse.trials.pruning.MoashaCallback` scores a
moasha rung with them under wsd.
"""
from __future__ import annotations

import copy
import math
import time

import lightning.pytorch as pl
import torch

from dse.errors import UserError
from dse.train.recipe import parse_rungs, wsd_phases

DECAY = 0.2  # a branch's length: this share of the steps so far (bench/make_tabular.py --rung-decay)


class RungScores(pl.Callback):
    """Score each rung on a discarded short-decay branch (or in place); records in `self.records`."""

    def __init__(self, rungs, decay: float = DECAY, seed: int = 0, on_score=None):
        if not 0.0 <= decay <= 1.0:
            raise UserError(f"rung decay: must be in [0, 1] (a share of the steps so far), got {decay}")
        self.rungs, self.decay, self.seed, self.on_score = parse_rungs(rungs), decay, seed, on_score
        self.records: list[dict] = []
        self.total_steps = 0
        self._at: dict = {}
        self._cpu0, self._branch_cpu, self._decay_start = 0.0, 0.0, None

    def on_fit_start(self, trainer, pl_module):
        if trainer.world_size > 1:
            raise UserError("rung scores: single-process fits only (got a DDP fit); run without rungs under DDP")
        self.records, self._branch_cpu = [], 0.0
        total = self.total_steps = int(trainer.estimated_stepping_batches)
        self._at = {}
        for r in self.rungs:
            self._at.setdefault(max(1, round(r * total)), r)
        self._decay_start = decay_start(pl_module.recipe, total)

    def on_train_start(self, trainer, pl_module):
        self._cpu0 = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step  # optimizer steps done, this batch's included
        if step not in self._at:
            return
        rung = self._at.pop(step)
        main_cpu = time.process_time() - self._cpu0 - self._branch_cpu
        cpu, wall = time.process_time(), time.perf_counter()
        steps = branch_steps(step, self.decay, self._decay_start)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        acc, loss = score(trainer, pl_module, steps, branch_seed(self.seed, len(self.records)))
        spent = time.process_time() - cpu
        self._branch_cpu += spent
        record = {"rung": str(rung), "step": step, "acc": acc, "loss": loss, "branch_steps": steps,
                  "lr": lr, "main_cpu": main_cpu, "branch_cpu": spent, "branch_seconds": time.perf_counter() - wall}
        self.records.append(record)
        if self.on_score is not None:
            self.on_score(record)


def decay_start(recipe, total: int) -> int | None:
    """The first step of the fit's own decay under wsd (a rung from there is scored in place); None otherwise."""
    if recipe.schedule != "wsd":
        return None
    return wsd_phases(total, recipe.warmup_fraction, recipe.decay_fraction)[1]


def branch_steps(step: int, decay: float, start: int | None) -> int:
    """Steps of the branch that scores a rung at optimizer step `step`: decay x step, rounded up; 0 (in place)
    with decay 0 or from the fit's own decay on (`start`, None: none)."""
    return math.ceil(decay * step) if decay > 0 and (start is None or step < start) else 0


def branch_seed(seed: int, index: int) -> int:
    """The seed of the fit's `index`-th rung branch (0-based): its batch order and RNG."""
    return seed * 1000003 + 7919 * (index + 1)


def score(trainer, pl_module, steps: int, seed: int) -> tuple[float, float]:
    """Accuracy and loss on the validation batches after a `steps`-step decay branch from the fit's current state
    (0: in place); the branch trains copies inside a forked RNG, so the fit's weights, optimizer and RNG stay.
    Also from a validation hook: the branch leaves Lightning's inference mode."""
    val = trainer.val_dataloaders
    model = pl_module.model
    devices = [model_device(model)] if model_device(model).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if steps:
            with torch.inference_mode(False), torch.enable_grad():
                model = copy.deepcopy(model)
                _branch(trainer, pl_module, model, steps, seed)
        return evaluate(model, val, pl_module.criterion, trainer)


def _branch(trainer, pl_module, model, steps: int, seed: int) -> None:
    """Train `model` (a copy) for `steps` steps with a copy of the optimizer's state, lr linearly to 0."""
    main_opt = trainer.optimizers[0]
    params = dict(zip(map(id, pl_module.model.parameters()), model.parameters()))
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[id(p)] for p in g["params"]]}
              for g in main_opt.param_groups]
    opt = type(main_opt)(groups)
    opt.load_state_dict(copy.deepcopy(main_opt.state_dict()))  # deep: SGD updates momentum in place
    start = [g["lr"] for g in opt.param_groups]
    batches = copy.copy(pl_module.train_batches)  # the same data on the same device, its own order
    batches.seed, batches.epoch = seed, 0
    model.train()
    done = 0
    with trainer.precision_plugin.train_step_context():
        while done < steps:
            for x, y in batches:
                for g, lr0 in zip(opt.param_groups, start):
                    g["lr"] = lr0 * (steps - done) / steps
                opt.zero_grad(set_to_none=True)
                pl_module.criterion(model(x), y).backward()
                opt.step()
                done += 1
                if done == steps:
                    break


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model, batches, criterion, trainer) -> tuple[float, float]:
    """(accuracy, mean loss) of `model` in eval mode over `batches`; restores its train/eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    try:
        with trainer.precision_plugin.forward_context():
            for x, y in batches:
                logits = model(x)
                loss_sum += float(criterion(logits.float(), y)) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                n += len(y)
    finally:
        model.train(was_training)
    return correct / max(n, 1), loss_sum / max(n, 1)
