"""A trial that cannot finish before the study's deadline stops early and is queued again, not overrun.

`study.timeout` is a promise about wall time. Optuna only checks it between trials, so the trial in flight
could run minutes past it. `callback(deadline)` watches a fit's measured step times: once the rest of the fit
(its remaining steps, plus validation) would end after the deadline, it raises `OutOfTime`. The trial function
(`dse.signals.guard`) then ends the trial like an interrupted one: FAIL with reason 'out of time', its
parameters queued again as WAITING, and the study stops. The next run of the command trains it first.
"""
from __future__ import annotations

import time

from dse.signals import Interrupted

WARMUP_STEPS = 3  # the first steps of a fresh model are several times slower (allocator warm-up)


class OutOfTime(Interrupted):
    """The fit would end after the study's deadline."""

    reason = "out of time"


def callback(deadline: float):
    """A Lightning callback that raises OutOfTime when the fit's measured pace would pass `deadline` (monotonic)."""
    import lightning.pytorch as pl

    class Deadline(pl.Callback):
        """Estimates the fit's end from its step times after each training step."""

        def __init__(self):
            self.first, self.steps, self.val_seconds, self.val_start = None, 0, 0.0, None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = time.monotonic()
            self.steps += 1
            if self.steps == WARMUP_STEPS:
                self.first = now
            if self.steps <= WARMUP_STEPS + 1:
                return
            per_step = (now - self.first) / (self.steps - WARMUP_STEPS)
            per_epoch = max(int(trainer.num_training_batches), 1)
            left_steps = trainer.max_epochs * per_epoch - trainer.global_step
            left_epochs = trainer.max_epochs - trainer.current_epoch
            val = self.val_seconds or per_step * max(int(sum(trainer.num_val_batches or [0])), 0) / 3
            need = left_steps * per_step + left_epochs * val
            if now + need > deadline:
                raise OutOfTime(f"needs ~{need:.0f}s more, {max(deadline - now, 0):.0f}s left before the timeout")

        def on_validation_epoch_start(self, trainer, pl_module):
            self.val_start = time.monotonic()

        def on_validation_epoch_end(self, trainer, pl_module):
            if self.val_start is not None:
                self.val_seconds = time.monotonic() - self.val_start

    return Deadline()
