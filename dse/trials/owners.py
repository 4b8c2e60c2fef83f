"""Who runs a trial: a killed process's trial is failed and retried by the next dse process on its host, at once.

The heartbeat (dse.storage) finds a dead worker's trial only after its grace period (90 s), only while some
worker still optimizes, and never on a journal storage (no heartbeats). But a process on the SAME host can
tell at once whether a trial's owner is alive. So:

- `mark(trial)`, first thing in the trial function, records the owner as trial system attr `dse:owner`
  (on dse's RDB storage, from a process's second trial on, the storage writes it in the transaction that makes
  the trial, so a trial is never RUNNING without its owner and `mark` writes nothing):
  {host, pid, start (field 22 of /proc/<pid>/stat: a reused pid is not taken for the owner), boot
  (/proc/sys/kernel/random/boot_id), pidns (the pid namespace: containers that share a host name and a
  kernel do not see each other's pids), time, trial (the trial's id: a re-queued copy that inherits the
  attr is not mistaken for the dead one)}.
- `reap(study)`, when a dse process opens a study and when its study ends, fails this host's RUNNING trials
  whose owner is gone (no such pid, a zombie, another process under the same pid, or a previous boot) with
  reason 'worker died (process gone)' and re-queues their params (and a grid cell's fixed params) as a
  WAITING trial, exactly like the heartbeat path: the same retry callback, the same max_retry, the same
  retry_history, so `dse.trials.claims.present` counts the dead one for its cell the same way.

Trials of other hosts (and of other pid namespaces on this one) are left to the heartbeat on RDB storages.
Journals and Optuna's gRPC proxy carry no heartbeat, so there `mark` also starts the trial's lease: a thread
that writes the time into the owner record ('beat', with the 'grace' it promises) every heartbeat interval
(30 s; DSE_HEARTBEAT=interval,grace) until the trial has finished. A trial of another host whose beat is older
than its grace is failed by `reap` with reason 'worker died (lease ran out)' and re-queued the same way; the
hosts' clocks must agree to well within the grace (NTP). On those storages `mark` also reaps before its trial
trains, as Optuna's heartbeat does at each trial's start, and `pending` tells a grid worker whether a RUNNING
trial can still end or come back. Host names must tell machines apart: two machines with the same name and
different boot ids are told apart by time (a trial of a previous boot was started before this boot).
"""
from __future__ import annotations

import copy
import os
import socket
import threading
import time

from dse.storage import _retry_class, _timing

KEY = "dse:owner"
REASON = "worker died (process gone)"
LAPSED = "worker died (lease ran out)"


def identity(pid: int | None = None) -> dict:
    """The owner record of process `pid` (default: this one), as seen from this process."""
    pid = os.getpid() if pid is None else int(pid)
    out = {"host": socket.gethostname(), "pid": pid, "time": time.time()}
    stat = _stat(pid)
    if stat is not None:
        out["start"] = stat[1]
    for key, value in (("boot", _boot_id()), ("pidns", _pid_ns())):
        if value:
            out[key] = value
    return out


def mark(trial) -> None:
    """Record this host and process as the owner of a running trial (no-op for FixedTrial/FrozenTrial); on a
    storage without heartbeats also reap the study's dead trials and keep this trial's lease (module doc)."""
    storage, trial_id = getattr(trial, "storage", None), getattr(trial, "_trial_id", None)
    if storage is None or trial_id is None:  # not a stored trial: nothing can be left RUNNING
        return
    if beating(storage):
        frozen = getattr(trial, "_cached_frozen_trial", None)  # the trial as it was made (Optuna's Trial)
        if frozen is not None and _made_here(frozen.system_attrs.get(KEY), trial_id):  # written with it (below)
            return
        storage.set_trial_system_attr(trial_id, KEY, {**identity(), "trial": trial_id})
        backend = getattr(storage, "_backend", storage)  # under Optuna's cache
        if hasattr(backend, "owner_of") and backend.owner_of is None:  # dse.storage's RDB storage
            backend.owner_of = lambda made: {KEY: {**identity(), "trial": made}}  # this process's next trials
        return
    record = {**identity(), "trial": trial_id}
    interval, grace = _timing(30, 90)
    record.update(beat=time.time(), grace=grace)
    storage.set_trial_system_attr(trial_id, KEY, record)
    threading.Thread(target=_keep_lease, args=(storage, trial_id, record, interval), daemon=True,
                     name=f"dse-lease-{trial_id}").start()
    if getattr(trial, "study", None) is not None:
        reap(trial.study)


def _made_here(owner, trial_id: int) -> bool:
    """Is `owner` this process's record for trial `trial_id` (written when this process made the trial)?"""
    return isinstance(owner, dict) and owner.get("trial") == trial_id and owner.get("pid") == os.getpid() \
        and owner.get("host") == socket.gethostname()


def beating(storage) -> bool:
    """Does Optuna's heartbeat watch this storage's trials (RDB storages as dse opens them)?"""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def _keep_lease(storage, trial_id: int, record: dict, interval: float) -> None:
    """Write a fresh beat into the owner record every `interval` seconds until the trial has finished."""
    from optuna.exceptions import UpdateFinishedTrialError

    while True:
        time.sleep(interval)
        try:
            storage.set_trial_system_attr(trial_id, KEY, {**record, "beat": time.time()})
        except (UpdateFinishedTrialError, KeyError):  # finished (or gone): the lease ends with the trial
            return
        except Exception:  # the storage is unreachable for now: try again at the next beat
            continue


def state(owner, trial_id: int | None = None) -> str:
    """'live', 'dead' (its process is gone), 'lapsed' (another host's, its lease ran out) or 'foreign' (another
    host's, or not known) for an owner record."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) or owner.get("host") is None:
        return "foreign"
    if trial_id is not None and owner.get("trial") != trial_id:  # inherited by a re-queued copy
        return "foreign"
    seen = _here(owner)
    if seen == "foreign" and _lapsed(owner):
        return "lapsed"
    return seen


def _lapsed(owner: dict) -> bool:
    """Has the lease in this owner record run out (a beat older than its grace)?"""
    beat, grace = owner.get("beat"), owner.get("grace")
    if not isinstance(beat, (int, float)) or not isinstance(grace, (int, float)):
        return False  # no lease (an RDB storage's trial, or an older dse)
    return time.time() - beat > grace


def _here(owner: dict) -> str:
    """'live', 'dead' or 'foreign' for an owner record, judged from this host's processes alone."""
    if owner["host"] != socket.gethostname():
        return "foreign"
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        booted = _boot_time()
        # a trial of a previous boot of this machine began before it booted; otherwise: a namesake machine
        return "dead" if booted is not None and float(owner.get("time", booted)) < booted else "foreign"
    if owner.get("pidns") != _pid_ns():  # another container on this kernel: its pids are not ours to see
        return "foreign"
    stat = _stat(owner["pid"])
    if stat is None:
        return "live" if _exists(owner["pid"]) else "dead"  # hidden by hidepid, or not on Linux
    status, start = stat
    if status in ("Z", "X"):  # killed, not yet waited for by its parent
        return "dead"
    if owner.get("start") is not None and owner["start"] != start:  # the pid was reused
        return "dead"
    return "live"


def reap(study, max_retry: int = 2) -> int:
    """Fail and re-queue this host's RUNNING trials whose owner process is gone; how many were reaped.

    Safe with any number of processes reaping at once: a trial is failed by one of them (the storage refuses
    the others), and only that one re-queues it. Best effort: a storage error leaves the trial for the next
    reap (or the heartbeat).
    """
    import optuna
    from optuna.exceptions import OptunaError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        running = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
    except (OptunaError, OSError):
        return 0
    verdict = {t._trial_id: state(t.system_attrs.get(KEY), t._trial_id) for t in running}
    dead = [t for t in running if verdict[t._trial_id] in ("dead", "lapsed")]
    if not dead:
        return 0
    retry = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    if retry is None:  # a journal (no heartbeat): the same callback the heartbeat path uses
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = _retry_class()(max_retry=max_retry)
    reaped = 0
    for trial in dead:
        try:
            storage.set_trial_user_attr(trial._trial_id, "reason",
                                        LAPSED if verdict[trial._trial_id] == "lapsed" else REASON)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except (OptunaError, OSError):  # UpdateFinishedTrialError: another process (or the heartbeat) was first
            continue
        reaped += 1
        failed = copy.deepcopy(storage.get_trial(trial._trial_id))
        failed.system_attrs.pop(KEY, None)  # the copy gets its own owner when it runs
        retry(study, failed)
    return reaped


def pending(study) -> bool:
    """On a storage without heartbeats: reap, then say whether a RUNNING trial can still end or come back (a
    live owner here, a lease that holds, or no owner yet within the grace of its start)."""
    from datetime import datetime

    from optuna.trial import TrialState

    reap(study)
    grace = _timing(30, 90)[1]
    for trial in study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(KEY)
        if not isinstance(owner, dict) or owner.get("trial") != trial._trial_id:  # popped, not yet marked
            start = trial.datetime_start
            if start is not None and (datetime.now() - start).total_seconds() < grace:
                return True
            continue
        verdict = state(owner, trial._trial_id)
        if verdict == "live" or verdict == "foreign" and "beat" in owner:
            return True
    return False


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process from /proc, or None if not there."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except (OSError, ValueError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name (field 2) may hold spaces and parentheses
    try:
        return fields[0], int(fields[19])  # field 3: state; field 22: starttime
    except (IndexError, ValueError):
        return None


def _exists(pid: int) -> bool:
    """Is there a process with this pid (maybe another user's)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _read(path: str) -> str | None:
    """A small file's stripped text, or None."""
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _boot_id() -> str | None:
    """This boot's id (Linux), or None."""
    return _read("/proc/sys/kernel/random/boot_id")


def _boot_time() -> float | None:
    """When this machine booted (seconds since the epoch), from /proc/stat, or None."""
    for line in (_read("/proc/stat") or "").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def _pid_ns() -> str | None:
    """This process's pid namespace ('pid:[4026531836]'), or None where there is none to read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
