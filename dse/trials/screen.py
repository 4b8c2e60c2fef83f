"""What a study prints: one line per trial with the study's counts, the best so far and the time left.

    trial 7 [ok] acc 86.12%  5.27 MFLOPs  0.135 M params  2 ep  41s  19a6781cd3
        study: 5 trained, 2 rejected, 1 repeat | best 87.76% | 6:12 elapsed, 2:48 left of 9:00
    trial 8 [out of time] needs ~299s more, 243s left before the timeout; queued again for the next run; going on: 243s left, the shortest trial took 41s  5c0e8a1f22
        study: 5 trained, 2 rejected, 1 repeat, 1 out of time | best 87.76% | 6:18 elapsed, 2:42 left of 9:00

Counts start from what the storage already holds (a resumed study) and follow this process's trials.
"""
from __future__ import annotations

import time

from dse.record import TrialRecord

UNTRAINED = {"rejected": "rejected", "duplicate": "repeat"}


def clock(seconds: float) -> str:
    """'1:02:03' or '2:03'."""
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Screen:
    """The study's running tally and its per-trial lines."""

    def __init__(self, trials, timeout: float | None, start: float | None = None):
        self.timeout, self.start = timeout, time.monotonic() if start is None else start
        self.counts = {"trained": 0, "rejected": 0, "repeat": 0, "failed": 0, "out of time": 0}
        self.best = None
        for t in trials:
            self.add(t)

    def add(self, trial) -> None:
        """Count one finished trial."""
        r = TrialRecord.from_trial(trial)
        if r.trained:
            self.counts["trained"] += 1
            if r.val_acc is not None and (self.best is None or r.val_acc > self.best):
                self.best = r.val_acc
        elif r.status in UNTRAINED:
            self.counts[UNTRAINED[r.status]] += 1
        elif r.status:
            self.counts["failed"] += 1
        elif r.reason == "out of time":  # stopped by the deadline, queued again (dse.trials.deadline)
            self.counts["out of time"] += 1

    def study_line(self) -> str:
        """'study: 5 trained, 2 rejected | best 87.76% | 6:12 elapsed, 2:48 left of 9:00'."""
        c = self.counts
        parts = [f"{c['trained']} trained"] + [f"{c[k]} {k}{'s' if c[k] > 1 and k == 'repeat' else ''}"
                                                 for k in ("rejected", "repeat", "failed", "out of time") if c[k]]
        best = f"best {100 * self.best:.2f}%" if self.best is not None else "best -"
        elapsed = time.monotonic() - self.start
        when = f"{clock(elapsed)} elapsed"
        if self.timeout:
            when += f", {clock(self.timeout - elapsed)} left of {clock(self.timeout)}"
        return f"    study: {', '.join(parts)} | {best} | {when}"


def trial_line(trial, note: str = "") -> str:
    """One line per finished trial (`note`, when given, goes after its reason)."""
    r = TrialRecord.from_trial(trial)
    point_id = r.point_id if r.point_id is not None else ""
    if not r.ended and r.reason:  # stopped out of time or interrupted: no result of its own
        text = "; ".join(x for x in (r.detail, note) if x)
        return f"trial {trial.number} [{r.reason}] {text}  {point_id}"
    head = f"trial {trial.number} [{r.status if r.ended else trial.state.name.lower()}]"
    if r.trained:
        spread = f" ± {100 * r.val_acc_std:.2f}" if r.val_acc_std is not None else ""
        return (f"{head} acc {100 * r.val_acc:.2f}%{spread}  {r.flops / 1e6:.2f} MFLOPs  "
                f"{r.params / 1e6:.3f} M params  {r.epochs} ep  {r.train_seconds or 0:.0f}s  {r.point_id}")
    return f"{head} {r.reason if r.reason is not None else ''}  {point_id}"
