"""dse's LightningModule (`Classifier`), the callback that feeds it (`Feed`) and its NaN watch (`LossWatch`).

dse.train.fit imports this module inside its fit (importing Lightning costs seconds), so importing
dse.train.fit does not load Lightning.
"""
from __future__ import annotations

import math
import os
import time

import lightning.pytorch as pl
import torch
from torch import nn

from dse.train.probe import MEMORY_PROBE_ENV, PROBED, write_memory_probe
from dse.train.recipe import Recipe, compiles, scheduler

WATCH_EVERY = 50  # steps between two looks at the running loss for NaN/inf (LossWatch)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class LossWatch:
    """NaN/inf detection on the epoch's running loss sum that never waits for the device.

    Every `every` steps the sum is copied to host memory asynchronously (pinned, on CUDA) and an event is
    recorded; a later look reads the copy only once its event has completed (`query`, which does not block).
    A NaN anywhere in the epoch stays in the sum, so a divergence is seen within about 2 x `every` steps.
    """

    def __init__(self, every: int, like: torch.Tensor):
        self.every, self.event, self.step_of, self.pending = every, None, 0, False
        self.host = torch.empty((), dtype=like.dtype, pin_memory=like.is_cuda)  # allocated before the steps

    def look(self, loss_sum: torch.Tensor, step: int, epoch: int) -> None:
        """At every `every`-th step: check the last copy if it has landed, then start a new one."""
        if step % self.every:
            return
        if self.pending and (self.event is None or self.event.query()):
            self.pending = False
            value = float(self.host)  # host memory: no device sync
            if not math.isfinite(value):
                raise Diverged(f"loss is {value} at epoch {epoch} step {self.step_of} (seen at step {step})")
        if self.pending:
            return  # the device is more than `every` steps behind: look again next time
        self.host.copy_(loss_sum, non_blocking=loss_sum.is_cuda)
        if loss_sum.is_cuda:
            self.event = torch.cuda.Event()
            self.event.record()
        self.step_of, self.pending = step, True


class Classifier(pl.LightningModule):
    """A network trained with SGD + cross-entropy; logs train/loss, val/loss, val/acc, test/acc, lr.

    The step loop never waits for the device: the loss sum and the correct counts are accumulated there
    and read once per epoch; NaN/inf is watched without a sync (LossWatch).
    """

    def __init__(self, model: nn.Module, recipe: Recipe, num_classes: int, train_batches):
        super().__init__()
        self.model, self.recipe, self.train_batches = model, recipe, train_batches
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.history: list[dict] = []
        self.compiled = ()  # (torch.compile(model),) when compiling: a tuple, so no second copy is registered
        self._loss_sum = None
        self._steps = [0]  # a list: no nn.Module.__setattr__ per step
        self._epoch_loss = None
        self._watch = None  # a LossWatch per epoch
        self._epoch_start = 0.0
        self._eval = None  # device sums of (loss x n, correct) over the validation or test set
        self._eval_count = 0
        self._probe = None  # where to write the GPU memory probe (dse.trials.pool), while not yet written

    def setup(self, stage):
        on_cuda = self.trainer.strategy.root_device.type == "cuda"
        if stage == "fit" and not self.compiled and compiles(self.recipe, on_cuda):
            torch._dynamo.reset()  # earlier trials' graphs: each new net counts against the recompile limit
            self.compiled = (torch.compile(self.model),)  # lazy: traced at the first step, inside the fit's time
        self._probe = os.environ.get(MEMORY_PROBE_ENV) if stage == "fit" and on_cuda and not PROBED else None

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self._probe and batch_idx >= 3:  # after a few optimizer steps: weights, grads, momentum, activations
            self._write_probe()

    def _write_probe(self) -> None:
        """Write this process's GPU memory numbers for dse.trials.pool's packing rule, once per process."""
        write_memory_probe(self._probe, self.trainer.strategy.root_device)
        self._probe = None

    def forward(self, x):
        return self.model(x)

    def on_train_epoch_start(self):
        self._loss_sum = torch.zeros((), device=self.device)
        self._steps = [0]
        self._epoch_loss = None
        self._watch = LossWatch(WATCH_EVERY, self._loss_sum)
        self._epoch_start = time.perf_counter()

    def training_step(self, batch, batch_idx):
        x, y = batch
        net = self.compiled[0] if self.compiled else self.model
        loss = self.criterion(net(x), y)
        self._loss_sum.add_(loss.detach())  # in place: no nn.Module.__setattr__ per step
        self._steps[0] += 1
        self._watch.look(self._loss_sum, self._steps[0], self.current_epoch)
        return loss

    def _start_eval(self):
        self._eval = torch.zeros(2, device=self.device)
        self._eval_count = 0

    def _add_eval(self, batch):
        """Add one batch's summed loss and correct count on the device (no sync); return nothing."""
        x, y = batch
        logits = self.model(x)  # eager: validation's other batch sizes would make compile trace again
        self._eval.add_(torch.stack([self.criterion(logits, y).float() * len(y),
                                     (logits.argmax(1) == y).sum().float()]))
        self._eval_count += len(y)

    def _eval_totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, accuracy) over every rank's share, still on the device."""
        sums = torch.cat([self._eval, torch.tensor([float(self._eval_count)], device=self.device)])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # DDP: all ranks' sums; else as is
        count = sums[2].clamp(min=1.0)
        return sums[0] / count, sums[1] / count

    def on_validation_epoch_start(self):
        self._start_eval()

    def validation_step(self, batch, batch_idx):
        self._add_eval(batch)

    def on_validation_epoch_end(self):
        loss, acc = self._eval_totals()
        self.log("val/loss", loss)
        self.log("val/acc", acc)
        self.log("val/error", 1.0 - acc)  # what a pruner watches when the study minimizes error
        if not self.trainer.sanity_checking:
            loss_value, acc_value = torch.stack([loss, acc]).tolist()  # the one read of validation
            self._record({"val/acc": acc_value, "val/loss": loss_value})

    def on_test_epoch_start(self):
        self._start_eval()

    def test_step(self, batch, batch_idx):
        self._add_eval(batch)

    def on_test_epoch_end(self):
        self.log("test/acc", self._eval_totals()[1])

    def on_train_epoch_end(self):
        if self._loss_sum is None:  # resumed from a checkpoint written at this epoch's end: already recorded
            return
        if self._probe:  # an epoch shorter than the probe's step
            self._write_probe()
        self.log("train/loss", self.mean_train_loss(), sync_dist=True)
        self._record({})  # epochs without validation

    def mean_train_loss(self) -> float:
        """The epoch's mean training loss: read from the device once per epoch; Diverged if not finite."""
        if self._epoch_loss is None:
            loss = (self._loss_sum / max(self._steps[0], 1)).item()
            if not math.isfinite(loss):
                raise Diverged(f"mean training loss is {loss} in epoch {self.current_epoch}")
            self._epoch_loss = loss
        return self._epoch_loss

    def _record(self, extra: dict) -> None:
        """Add (or complete) this epoch's row of the history."""
        epoch = self.current_epoch + 1
        if self.history and self.history[-1]["epoch"] == epoch:
            self.history[-1].update(extra)
            return
        self.history.append({"epoch": epoch, "train/loss": self.mean_train_loss(),
                             "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                             "seconds": time.perf_counter() - self._epoch_start, **extra})

    def on_save_checkpoint(self, checkpoint):
        """A paused fit's own state beside Lightning's: the history, the batch order's epoch and the RNG."""
        checkpoint["dse"] = {"history": list(self.history), "batches_epoch": int(self.train_batches.epoch),
                             "rng": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("dse")
        if state:
            self.history = list(state["history"])
            self.train_batches.epoch = int(state["batches_epoch"])
            torch.set_rng_state(state["rng"])

    def configure_optimizers(self):
        r = self.recipe
        decay, no_decay = [], []
        for p in self.model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0)
        sched = scheduler(r, opt, len(self.train_batches))  # after DDP sharding
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Feed(pl.Callback):
    """Before the optimizers are made: data to the training device, one DDP shard per rank, channels_last."""

    def __init__(self, batches, channels_last: bool):
        self.batches, self.channels_last = batches, channels_last

    def setup(self, trainer, pl_module, stage):
        device = trainer.strategy.root_device
        for b in self.batches:
            b.to(device, self.channels_last).shard(trainer.global_rank, trainer.world_size)
        if self.channels_last:
            pl_module.model.to(memory_format=torch.channels_last)
