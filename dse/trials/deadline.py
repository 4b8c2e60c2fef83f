"""A trial that cannot finish before the study's deadline stops early and is queued again, not overrun.

`study.timeout` is a promise about wall time. Optuna only checks it between trials, so the trial in flight
could run minutes past it. `callback(deadline)` watches a fit's measured step times (the median of its recent
steps, once MEASURE_STEPS are timed): once the rest of the fit
(its remaining steps, plus validation) would end after the deadline, it raises `OutOfTime`. The trial function
(`dse.trials.signals.guard`) then ends the trial like an interrupted one: FAIL with reason 'out of time', and its
parameters are queued again as WAITING when this process stops, so the next run of the command trains it first.

An out-of-time trial does not stop the study while another trial fits: `time_for_another` goes on while the
time left before the deadline exceeds the shortest trial trained so far in this study (its measured training
seconds), so the sampler may still propose cheaper points; with no trained trial to go by, the study stops.
Measured before this rule: a busy default run stopped 4 minutes early when its fourth trial's early pace
(299 s needed, 243 s left) ran out of time. A point that ran out of time is not trained again in the same run.
"""
from __future__ import annotations

import collections
import statistics
import time

from dse.trials.signals import Interrupted

WARMUP_STEPS = 3  # the first steps of a fresh model are several times slower (allocator warm-up)
# The pace is the trial's own: the median step time of its last WINDOW steps, judged once MEASURE_STEPS are
# timed after the warm-up. Before, the mean over the steps since the warm-up decided from the fifth step on: a
# burst of load in two early steps (another process on the core) set the pace of the whole fit, and a busy
# default run stopped 7 trials on predictions up to 3.7x off (issue 21).
MEASURE_STEPS = 10
WINDOW = 20


class OutOfTime(Interrupted):
    """The fit would end after the study's deadline."""

    reason = "out of time"


def callback(deadline: float):
    """A Lightning callback that raises OutOfTime when the fit's measured pace would pass `deadline` (monotonic)."""
    import lightning.pytorch as pl

    class Deadline(pl.Callback):
        """Estimates the fit's end from its step times after each training step."""

        def __init__(self):
            self.last, self.steps, self.val_seconds, self.val_start = None, 0, 0.0, None
            self.times = collections.deque(maxlen=WINDOW)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = time.monotonic()
            self.steps += 1
            if self.steps > WARMUP_STEPS:
                self.times.append(now - self.last)
            self.last = now
            if len(self.times) < MEASURE_STEPS:
                return
            per_step = statistics.median(self.times)
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


def out_of_time(trial) -> bool:
    """Did this finished trial stop out of time (FAIL, a reason that starts 'out of time'), queued again or not?"""
    return str(trial.user_attrs.get("reason", "")).startswith(OutOfTime.reason)


def shortest_trial(trials) -> float | None:
    """The fewest training seconds of a trained trial (status ok) among `trials`, or None."""
    seconds = [t.user_attrs.get("train_seconds") for t in trials if t.user_attrs.get("status") == "ok"]
    seconds = [float(s) for s in seconds if s is not None]
    return min(seconds) if seconds else None


def time_for_another(trials, deadline: float, now: float | None = None) -> tuple[bool, str]:
    """(go on?, why in words) after a trial ran out of time: go on while the time left before `deadline`
    (monotonic) exceeds the shortest trial trained so far among `trials`."""
    left = deadline - (time.monotonic() if now is None else now)
    shortest = shortest_trial(trials)
    if shortest is None:
        return False, "stopping: no trial trained yet to size another by"
    if left > shortest:
        return True, f"going on: {left:.0f}s left, the shortest trial took {shortest:.0f}s"
    return False, f"stopping: {max(left, 0):.0f}s left, the shortest trial took {shortest:.0f}s"


# When time is short, the next points are chosen to fill it (dse.trials.sampling.FeasibleStart): a busy default run
# (results/default/busy_one_core.log, before this rule) trained 6 points by 6:43 of 9:00, then spent its last
# two minutes on six proposals that each ran out of time, and ended 44 s before its timeout.
SHORT = 2.0  # time is short once less than this many times the longest trained trial is left
FILL = 0.8  # the points chosen when time is short are predicted to take at most this share of the time left


def size_measure(trials) -> str:
    """What training time is predicted from: activations when the trained trials recorded them, else FLOPs.

    Activations predict it better. In the busy default run (results/default/busy_one_core.log, 6 trained
    points), leave-one-out errors of a line in activations were 10 s RMS, of a line in FLOPs 25 s (a deeper
    point of 2.55 MFLOPs took 87 s, against 51 s for one of 3.50 MFLOPs with fewer activations)."""
    ok = [t.user_attrs for t in trials if t.user_attrs.get("status") == "ok"]
    return "acts" if ok and all(a.get("acts") is not None for a in ok) else "flops"


def predictor(trials, by: str = "flops"):
    """Training seconds as a function of a point's `by` measure (acts or flops), from the trained trials
    (status ok) among `trials`; None when none is trained.

    Two or more: a line fitted by least squares (slope >= 0). One: proportional to its measure. Either way a
    point cheaper than the cheapest trained one is predicted to take as long as that one (an unknown fixed
    cost per trial: never guess a point faster than anything measured)."""
    pts = [(float(a[by]), float(a["train_seconds"])) for a in (t.user_attrs for t in trials)
           if a.get("status") == "ok" and a.get(by) is not None and a.get("train_seconds") is not None]
    if not pts:
        return None
    low = min(f for f, _ in pts)
    if len(pts) == 1:
        (f1, s1), = pts
        return lambda size: s1 * max(float(size), low) / max(f1, 1.0)
    mean_f = sum(f for f, _ in pts) / len(pts)
    mean_s = sum(s for _, s in pts) / len(pts)
    var = sum((f - mean_f) ** 2 for f, _ in pts)
    slope = max(sum((f - mean_f) * (s - mean_s) for f, s in pts) / var, 0.0) if var > 0 else 0.0
    return lambda size: mean_s + slope * (max(float(size), low) - mean_f)


def time_is_short(trials, deadline: float, now: float | None = None) -> bool:
    """Is less time left before `deadline` than SHORT x the longest trained trial (status ok) of `trials`?"""
    left = deadline - (time.monotonic() if now is None else now)
    seconds = [t.user_attrs.get("train_seconds") for t in trials if t.user_attrs.get("status") == "ok"]
    seconds = [float(s) for s in seconds if s is not None]
    return bool(seconds) and left < SHORT * max(seconds)


def pick_in_time(candidates, trials, deadline: float, now: float | None = None, by: str = "flops"):
    """When time is short, the candidate to train next, of `candidates` [(size, item)] with sizes in the `by`
    measure (`size_measure`); None when time is not short (`time_is_short`), no trial is trained, or no
    candidate fits.

    The time to fill is FILL x the time left before `deadline`. As many trials as the fastest candidate allows
    share it (k = fill // fastest prediction), and the next one is the candidate predicted (`predictor`) to
    take longest within its share, fill / k: the last trial fills what is left, two trials take half each."""
    now = time.monotonic() if now is None else now
    predict = predictor(trials, by)
    if predict is None or not time_is_short(trials, deadline, now):
        return None
    fill = FILL * (deadline - now)
    predicted = [(predict(size), i) for i, (size, _) in enumerate(candidates)]
    fastest = min((p for p, _ in predicted), default=None)
    if fastest is None or fastest > fill:
        return None
    share = fill / max(int(fill // max(fastest, 1e-9)), 1)
    return candidates[max((p, i) for p, i in predicted if p <= share)[1]][1]
