"""A trial's progress line when no progress bar shows it (progress=false): epoch, step, pace and predicted end.

A busy default run trained one trial for 368 s with nothing on the screen. With `Progress` among a fit's
callbacks, a line like 'trial 3: epoch 1/2, step 40/120, 0.85 s/step, ends in ~68 s' is printed at most
every EVERY_S seconds (the first once a pace is measured), so a silent screen means a stuck process.
dse.trials.objective imports this module inside a trial: it loads Lightning.
"""
from __future__ import annotations

import time

import lightning.pytorch as pl

EVERY_S = 30.0  # at most one line this often; at least one this often while steps end


class Progress(pl.Callback):
    """Prints one progress line at most every `every` seconds of `clock` (injectable for tests) to `out`."""

    def __init__(self, label: str, every: float = EVERY_S, clock=time.monotonic, out=None):
        self.label, self.every, self.clock = label, every, clock
        self.out = out or (lambda line: print(line, flush=True))
        self.start, self.last, self.steps = None, None, 0

    def on_train_start(self, trainer, pl_module):
        self.start = self.last = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1
        now = self.clock()
        if self.start is None:
            self.start = self.last = now
        if now - self.last >= self.every:
            self.last = now
            self.out(self.line(trainer, now))

    def line(self, trainer, now: float) -> str:
        """'trial 3: epoch 1/2, step 40/120, 0.85 s/step, ends in ~68 s'."""
        per_epoch = max(int(trainer.num_training_batches), 1)
        total = trainer.max_epochs * per_epoch
        step = int(trainer.global_step)
        pace = (now - self.start) / max(self.steps, 1)
        return (f"{self.label}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, step {step}/{total}, "
                f"{pace:.2f} s/step, ends in ~{max(total - step, 0) * pace:.0f} s")
