"""What a study prints: one line per trial with the study's counts, the best so far and the time left.

    trial 7 [ok] acc 86.12%  5.27 MFLOPs  0.135 M params  2 ep  41s  19a6781cd3
        study: 5 trained, 2 rejected, 1 repeat (this run: 2 trained) | best 87.76% | 6:12 elapsed, 2:48 left of 9:00
    trial 8 [out of time] needs ~299s more, 243s left before the timeout; queued again for the next run; going on: 243s left, the shortest trial took 41s  5c0e8a1f22
        study: 5 trained, 2 rejected, 1 repeat, 1 out of time (this run: 2 trained, 1 out of time) | best 87.76% | ...

The counts before the parentheses are the whole study's (what the storage already held, for a resumed study,
plus this process's trials); those inside count this run's alone ('all in this run' when the study began here).
Once a point has been trained with two seeds (dse.results.noise), the study line adds the seed noise. At the
end, `noise_lines` prints the estimate and the Pareto front, cheapest first, with '≈' where a point is within
seed noise of the cheaper one before it:

    seed noise: ±0.80 points of validation accuracy (1 repeated point, 2 seeds; 1 degree of freedom: ...)
    Pareto front, cheapest first (≈ marks a point within seed noise of the cheaper point before it, ...):
          MFLOPs   val acc  runs  trial  point
            2.10    63.30%     1      3  19a6781cd3
            4.52  ≈ 64.10%     2      5  5c0e8a1f22
"""
from __future__ import annotations

import time

from dse.record import TrialRecord
from dse.results import noise

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
        self.counts = dict.fromkeys(KINDS, 0)  # the whole study's
        self.mine = dict.fromkeys(KINDS, 0)  # this run's
        self.best = None
        self.trained: list[dict] = []  # what dse.results.noise reads: point id, accuracy, seeds, spread
        self.points: set = set()  # their point ids
        self.noise, self.noise_stale = None, False  # noise.estimate(self.trained), and whether to compute it again
        for t in trials:
            self.add(t, mine=False)
        self.resumed = any(self.counts.values())

    def add(self, trial, mine: bool = True) -> None:
        """Count one finished trial (`mine`: finished by this run)."""
        r = TrialRecord.from_trial(trial)
        kind = None
        if r.trained:
            kind = "trained"
            if r.val_acc is not None and (self.best is None or r.val_acc > self.best):
                self.best = r.val_acc
            self.trained.append({"number": trial.number, "status": "ok", "point_id": r.point_id,
                                 "accuracy": r.val_acc, "seeds": r.seeds, "val_acc_std": r.val_acc_std})
            # only a point's second run (or one of several seeds) changes the estimate: at 10k trials it costs
            # 100 ms, so it is not computed again for every trial
            self.noise_stale |= r.point_id is None or r.point_id in self.points or (r.seeds or 1) > 1
            self.points.add(r.point_id)
        elif r.status in UNTRAINED:
            kind = UNTRAINED[r.status]
        elif r.status in ("pruned", "paused"):  # stopped by the pruner (paused: moasha may resume it)
            kind = r.status
        elif r.status:
            kind = "failed"
        elif r.reason == "out of time":  # stopped by the deadline, queued again (dse.trials.deadline)
            kind = "out of time"
        if kind:
            self.counts[kind] += 1
            self.mine[kind] += mine

    def study_line(self) -> str:
        """'study: 5 trained, 2 rejected (this run: 2 trained) | best 87.76% | 6:12 elapsed, 2:48 left of 9:00'."""
        own = ", ".join(tally(self.mine, zero=False)) or "none yet"
        parts = ", ".join(tally(self.counts)) + (f" (this run: {own})" if self.resumed else " (all in this run)")
        best = f"best {100 * self.best:.2f}%" if self.best is not None else "best -"
        if self.noise_stale:
            self.noise, self.noise_stale = noise.estimate(self.trained), False
        found = self.noise
        if found is not None:
            best += f" | seed noise ±{100 * found.sigma:.2f} ({found.df} df)"
        elapsed = time.monotonic() - self.start
        when = f"{clock(elapsed)} elapsed"
        if self.timeout:
            when += f", {clock(self.timeout - elapsed)} left of {clock(self.timeout)}"
        return f"    study: {parts} | {best} | {when}"


KINDS = ("trained", "paused", "pruned", "rejected", "repeat", "failed", "out of time")


def tally(counts: dict, zero: bool = True) -> list[str]:
    """['5 trained', '2 rejected', '1 repeat'] (trained always when `zero`; the other kinds when not 0)."""
    return [f"{counts[k]} {k}{'s' if counts[k] > 1 and k == 'repeat' else ''}" for k in KINDS
            if counts[k] or (zero and k == "trained")]


def trial_line(trial, note: str = "") -> str:
    """One line per finished trial (`note`, when given, goes after its reason)."""
    r = TrialRecord.from_trial(trial)
    point_id = r.point_id if r.point_id is not None else ""
    if not r.ended and r.reason:  # stopped out of time or interrupted: no result of its own
        text = "; ".join(x for x in (r.detail, note) if x)
        return f"trial {trial.number} [{r.reason}] {text}  {point_id}"
    head = f"trial {trial.number} [{r.status if r.ended else trial.state.name.lower()}]"
    again = f"  (seed {r.seed}: trial {r.repeat_of}'s point again, for the seed noise)" \
        if r.repeat_of is not None else ""
    if r.trained:
        spread = f" ± {100 * r.val_acc_std:.2f}" if r.val_acc_std is not None else ""
        return (f"{head} acc {100 * r.val_acc:.2f}%{spread}  {r.flops / 1e6:.2f} MFLOPs  "
                f"{r.params / 1e6:.3f} M params  {r.epochs} ep  {r.train_seconds or 0:.0f}s  {r.point_id}{again}")
    return f"{head} {r.reason if r.reason is not None else ''}  {point_id}"


def noise_lines(table: list[dict], front: list[dict]) -> list[str]:
    """The end of a run: the seed-noise estimate (or that there is none) and the front with its ties marked
    (dse.results.noise), from trials.csv's rows and pareto.csv's."""
    found = noise.estimate(table)
    lines = [found.words() if found is not None else noise.UNKNOWN]
    rows = noise.front_rows(front, table, found)
    if not rows:
        return lines
    lines.append("Pareto front, cheapest first" + (f" ({noise.ties_words(rows)}):" if found is not None else ":"))
    lines.append(f"    {'MFLOPs':>8}  {'val acc':>9}  {'runs':>4}  {'trial':>5}  point")
    for r in rows:
        mark = noise.TIE if r["tie"] else " "
        lines.append(f"    {r['flops'] / 1e6:8.2f}  {mark} {100 * r['accuracy']:6.2f}%  {r['runs']:4d}  "
                     f"{r['number']:5d}  {r['point_id'] or ''}")
    return lines
