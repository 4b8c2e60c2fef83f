"""SIGINT/SIGTERM for a search: the first signal stops at once but cleanly, a second one aborts.

Choice: the first signal interrupts the trial that is training (waiting for it could take hours at paper
fidelity). The trial ends as FAIL with user attr `reason: interrupted` (no `status`, so it does not count
toward n_trials), a WAITING copy of its parameters is enqueued so the next run of the command re-runs it,
no new trial starts, and the search writes its results and exits 128+signal (130 for Ctrl-C, 143 for
SIGTERM). Outside training (storage writes, reports) the first signal only sets the flag, so no storage
write is cut in half. A second signal exits at once (os._exit); a trial left RUNNING by that is failed and
retried by the heartbeat like a killed worker's. A SIGTERM within SAME_TERM_S of the first SIGTERM is not a
second signal: `scancel` reaches every process of a SLURM job, and a pool parent forwards it to its workers too.

A trial stopped out of time (dse.trials.deadline.OutOfTime) is not a signal: the guard records it the same way
(FAIL, reason 'out of time') but raises TrialOutOfTime, which the search catches and goes on while another
trial fits (dse.trials.deadline.time_for_another). Its parameters are queued again only when this process stops
(`requeue()`, in a finally), so Optuna does not pop the same WAITING trial straight back in this run; and
`ran_out_of_time(key)` tells the trial function not to train that point again in this run. Queued at most once
and at most QUEUE_MAX per process: a copy stopped out of time again, or one past QUEUE_MAX, fails for good
(status failed, a reason that says why), so the queue the next run pops first is never more than one trial.

Use: `install()` in the entry point, wrap the trial function with `guard(fn)`, pass `StopOnSignal()` to
`study.optimize(callbacks=...)` and TrialOutOfTime to its `catch`, call `requeue()` when optimize ends, and
return `exit_code()` (0 when no signal came).
"""
from __future__ import annotations

import os
import signal
import threading
import time

REASON = "interrupted"
OUT_OF_TIME_FROM = "dse:out_of_time_from"  # system attr of a copy queued after its trial ran out of time
QUEUE_MAX = 1  # trials stopped out of time that one process queues again (the rest fail for good)
SAME_TERM_S = 5.0  # a SIGTERM this soon after the first is the same request, not the second that aborts
_state = {"signum": None, "armed": False, "at": 0.0, "deferred": None}
_later: list = []  # (study, FrozenTrial): out-of-time trials' copies, queued again when this process stops
_ran_out: dict = {}  # "point_id:seed" -> trial number: points stopped out of time in this process


class Interrupted(BaseException):
    """Raised inside a running trial by the first signal; not an Exception, so no `except Exception` eats it."""


class TrialInterrupted(Exception):
    """What the guarded trial function raises instead: Optuna marks the trial FAIL and re-raises it."""


class TrialOutOfTime(Exception):
    """What the guarded trial function raises for a trial stopped out of time: pass it to optimize's `catch`,
    so the study goes on (or not: dse.trials.deadline.time_for_another decides)."""


def _handler(signum, frame) -> None:
    """First signal: remember it (and interrupt training when armed); second: exit now."""
    if _state["signum"] is not None:
        if signum == signal.SIGTERM == _state["signum"] and time.monotonic() - _state["at"] < SAME_TERM_S:
            return  # the same request: SLURM signals every process of a job, and a pool parent forwards it too
        os.write(2, b"\nsecond signal: aborting now\n")
        os._exit(128 + signum)
    _state["signum"], _state["at"] = signum, time.monotonic()
    name = signal.Signals(signum).name
    if _state["armed"]:
        _state["armed"] = False
        os.write(2, f"\n{name}: stopping the current trial (again to abort at once)\n".encode())
        _interrupt(name, frame)
        return
    os.write(2, f"\n{name}: stopping after this step (again to abort at once)\n".encode())


def _importing(frame) -> bool:
    """Is Python importing a module in `frame` or a caller of it?"""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _interrupt(name: str, frame) -> None:
    """Raise Interrupted in the trial, but not inside an import: an exception there leaves a C extension half
    imported (pybind11's 'type ... is already registered' on the next import, e.g. scipy.optimize), so the raise
    waits, 50 ms at a time (SIGALRM), until the import is done; the guard cancels a wait when the trial ends."""
    if not _importing(frame):
        raise Interrupted(name)
    _state["deferred"] = name
    signal.signal(signal.SIGALRM, _deferred)
    signal.setitimer(signal.ITIMER_REAL, 0.05)


def _deferred(signum, frame) -> None:
    """SIGALRM after an interrupt that came during an import: try again."""
    name, _state["deferred"] = _state.get("deferred"), None
    if name is not None:
        _interrupt(name, frame)


def install() -> None:
    """Handle SIGINT and SIGTERM in this process (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state["signum"] = None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def requested() -> int | None:
    """The signal number received, or None."""
    return _state["signum"]


def exit_code() -> int:
    """128 + the received signal, or 0."""
    return 0 if _state["signum"] is None else 128 + _state["signum"]


def guard(fn):
    """Wrap a trial function: interruptible while it runs; an interrupted trial gets reason and a re-queue."""

    def run(trial):
        if _state["signum"] is not None:
            trial.study.stop()
            _record(trial)
            raise TrialInterrupted(f"trial {trial.number} [{REASON}] stop requested before the trial started; "
                                   "queued again")
        _state["armed"] = True
        try:
            return fn(trial)
        except Interrupted as exc:  # a signal, or dse.trials.deadline.OutOfTime
            _state["armed"] = False
            reason = getattr(exc, "reason", REASON)
            if reason != REASON and _state["signum"] is None:  # out of time: the study may go on
                why = _not_queued(trial)
                trial.set_user_attr("reason", reason if why is None else f"{reason}: {why}")
                trial.set_user_attr("detail", str(exc))
                if why is None:
                    _later.append((trial.study, _copy(trial, {OUT_OF_TIME_FROM: trial.number})))
                else:  # failed for good: counts as a failed trial, never queued again
                    trial.set_user_attr("status", "failed")
                attrs = trial.user_attrs
                if attrs.get("point_id") is not None:
                    _ran_out[f"{attrs['point_id']}:{attrs.get('seed', 0)}"] = trial.number
                raise TrialOutOfTime(f"trial {trial.number} [{reason}] {exc}") from None
            _record(trial, reason)
            raise TrialInterrupted(f"trial {trial.number} [{reason}] {exc}; queued again: the next run of the "
                                   "command trains it first") from None
        finally:
            _state["armed"] = False
            if _state.get("deferred"):  # the trial ended before a deferred interrupt could land
                _state["deferred"] = None
                signal.setitimer(signal.ITIMER_REAL, 0)

    run.__wrapped__ = fn
    return run


def _not_queued(trial) -> str | None:
    """Why a trial stopped out of time is not queued again, or None when it is.

    At most once: a copy that ran out of time again fails for good. At most QUEUE_MAX per process: the queue
    is popped before any new point, and a busy run once stopped 7 trials, which then ran before any new one."""
    first = trial.storage.get_trial_system_attrs(trial._trial_id).get(OUT_OF_TIME_FROM)
    if first is not None:
        return f"again (queued once already, from trial {first}); not queued a second time"
    if len(_later) >= QUEUE_MAX:
        return (f"not queued: {QUEUE_MAX} stopped trial per run is queued again, so stopped trials never crowd "
                "out new points")
    return None


def mark_of(trial) -> dict:
    """The OUT_OF_TIME_FROM mark of a running trial ({} when it was never stopped out of time)."""
    first = trial.storage.get_trial_system_attrs(trial._trial_id).get(OUT_OF_TIME_FROM)
    return {} if first is None else {OUT_OF_TIME_FROM: first}


def _record(trial, reason: str = REASON) -> None:
    """Mark an interrupted trial and enqueue its parameters again (the next run of the command re-runs it)."""
    trial.study.stop()
    trial.set_user_attr("reason", reason)
    copy = _copy(trial)
    if copy is not None:
        trial.study.add_trial(copy)


def _copy(trial, mark: dict | None = None):
    """A WAITING copy of a running trial's parameters (None when it has none), to queue again; it keeps the
    trial's OUT_OF_TIME_FROM mark, and adds `mark`."""
    import optuna

    attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("status", "reason", "detail")}
    fixed = trial.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
    if not (fixed or trial.params):
        return None
    dists = trial.distributions
    params = {**(fixed or {}), **trial.params}
    system = {"dse:requeued_from": trial.number, **mark_of(trial), **(mark or {})}
    if fixed:
        system["fixed_params"] = fixed
    return optuna.create_trial(
        state=optuna.trial.TrialState.WAITING, params={k: v for k, v in params.items() if k in dists},
        distributions={k: v for k, v in dists.items() if k in params}, user_attrs=attrs, system_attrs=system)


def requeue() -> int:
    """Queue again the trials this process stopped out of time (call it once optimize has ended); how many.

    Also forgets which points ran out of time: a later run in this process may train them."""
    added = 0
    while _later:
        study, copy = _later.pop(0)
        if copy is not None:
            study.add_trial(copy)
            added += 1
    _ran_out.clear()
    return added


def ran_out_of_time(key: str) -> int | None:
    """The number of the trial of this process that ran out of time on `key` ("point_id:seed"), or None."""
    return _ran_out.get(key)


class StopOnSignal:
    """Optuna callback: stop the study after the current trial once a signal came."""

    def __call__(self, study, trial) -> None:
        if _state["signum"] is not None:
            study.stop()

