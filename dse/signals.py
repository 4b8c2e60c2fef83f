"""SIGINT/SIGTERM for a search: the first signal stops at once but cleanly, a second one aborts.

Choice: the first signal interrupts the trial that is training (waiting for it could take hours at paper
fidelity). The trial ends as FAIL with user attr `reason: interrupted` (no `status`, so it does not count
toward n_trials), a WAITING copy of its parameters is enqueued so the next run of the command re-runs it,
no new trial starts, and the search writes its results and exits 128+signal (130 for Ctrl-C, 143 for
SIGTERM). Outside training (storage writes, reports) the first signal only sets the flag, so no storage
write is cut in half. A second signal exits at once (os._exit); a trial left RUNNING by that is failed and
retried by the heartbeat like a killed worker's.

Use: `install()` in the entry point, wrap the trial function with `guard(fn)`, pass `StopOnSignal()` to
`study.optimize(callbacks=...)`, and return `exit_code()` (0 when no signal came).
"""
from __future__ import annotations

import os
import signal
import threading

REASON = "interrupted"
_state = {"signum": None, "armed": False}


class Interrupted(BaseException):
    """Raised inside a running trial by the first signal; not an Exception, so no `except Exception` eats it."""


class TrialInterrupted(Exception):
    """What the guarded trial function raises instead: Optuna marks the trial FAIL and re-raises it."""


def _handler(signum, frame) -> None:
    """First signal: remember it (and interrupt training when armed); second: exit now."""
    if _state["signum"] is not None:
        os.write(2, b"\nsecond signal: aborting now\n")
        os._exit(128 + signum)
    _state["signum"] = signum
    name = signal.Signals(signum).name
    if _state["armed"]:
        _state["armed"] = False
        os.write(2, f"\n{name}: stopping the current trial (again to abort at once)\n".encode())
        raise Interrupted(name)
    os.write(2, f"\n{name}: stopping after this step (again to abort at once)\n".encode())


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
        except Interrupted as exc:  # a signal, or dse.deadline.OutOfTime
            _state["armed"] = False
            reason = getattr(exc, "reason", REASON)
            _record(trial, reason)
            raise TrialInterrupted(f"trial {trial.number} [{reason}] {exc}; queued again: the next run of the "
                                   "command trains it first") from None
        finally:
            _state["armed"] = False

    run.__wrapped__ = fn
    return run


def _record(trial, reason: str = REASON) -> None:
    """Mark an interrupted trial and enqueue its parameters again (the next run of the command re-runs it)."""
    import optuna

    trial.study.stop()
    trial.set_user_attr("reason", reason)
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("status", "reason")}
    fixed = trial.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
    if fixed or trial.params:
        dists = trial.distributions
        params = {**(fixed or {}), **trial.params}
        system = {"dse:requeued_from": trial.number}
        if fixed:
            system["fixed_params"] = fixed
        trial.study.add_trial(optuna.create_trial(
            state=optuna.trial.TrialState.WAITING, params={k: v for k, v in params.items() if k in dists},
            distributions={k: v for k, v in dists.items() if k in params}, user_attrs=attrs, system_attrs=system))


class StopOnSignal:
    """Optuna callback: stop the study after the current trial once a signal came."""

    def __call__(self, study, trial) -> None:
        if _state["signum"] is not None:
            study.stop()

