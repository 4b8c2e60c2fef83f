"""Exactly-once training: grid cells (below) and the points of sampled studies (`claim`, at the end).

Sampled studies: before a trial trains a point, it claims (point id, seed) in the storage with one atomic
write (`claim`); a trial that finds the claim held by another trial (running, trained, pruned or failed) is a
duplicate and trains nothing. A holder that died or was interrupted hands the claim to the trial retrying it
(`take_over`), itself through a claim, so of two retries of one dead holder one trains. The check costs one
insert, never a read of the study's trials.

Exactly-once grids: every cell x seed of a grid study is enqueued once and completed once, by any number
of workers on one storage, also when workers are killed.

Optuna's GridSampler does not promise this with parallel workers (optuna issues #2039, #4627). dse does:

1. Enqueue once. Exactly one process per round enqueues the missing cells as WAITING trials. It is elected
   through the storage: `create_new_study(name="<study>:grid-lock:<round>")` succeeds for one process only
   (a unique key in RDB storages, the log order in a journal). The winner enqueues, then sets the study
   system attr `dse:grid_round`; the others wait for that marker. A later run of the command (resume) starts
   a new round only for cells that are really missing (see `missing`).
2. Claim by popping. Workers take WAITING trials through Optuna's pop, which moves one trial WAITING ->
   RUNNING atomically; a pop that loses the race moves on to the next trial.
3. Dead workers. The next dse process on the dead worker's machine fails its RUNNING trial at once (reason
   'worker died (process gone)', dse.trials.owners); on other machines the trial stops beating and, after the grace
   period, a live worker marks it FAIL ('worker died (heartbeat)', dse.storage; on a journal or the gRPC proxy
   its lease runs out: 'worker died (lease ran out)', dse.trials.owners). Either way its params are re-queued.
   The takeover and the owner's COMPLETE are one atomic state change each (dse.storage), so one of them wins: a
   live worker that was only slow has its COMPLETE refused, drops its result and goes on (`optimize`).
4. Stop. `WaitForWork` (an optimize callback) lets a worker go on while a WAITING trial exists, waits while
   other workers' trials are RUNNING (a dead one comes back as WAITING), and stops the study otherwise.

A worker can still find the queue empty between its check and its pop (another worker took the last cell):
Optuna then makes a fresh trial, which the objective ends as FAIL 'grid_exhausted' without training.
"""
from __future__ import annotations

import time

from dse.errors import UserError
from dse.record import TrialRecord
from dse.trials import owners, signals

ROUND = "dse:grid_round"
PRESENT = ("WAITING", "RUNNING", "COMPLETE", "PRUNED")


def cell_of(trial) -> tuple[str, int] | None:
    """(label, seed) of a grid trial, from its params or its enqueued fixed params; None for other trials."""
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    if "cell" not in params:
        return None
    return str(params["cell"]), int(params.get("seed", 0))


def present(trial, max_retry: int) -> bool:
    """Does this trial stand for its cell (running, queued, done, or a death whose retry is or will be queued)?"""
    state = trial.state.name
    if state in PRESENT:
        return True
    if state != "FAIL":
        return False
    record = TrialRecord.from_trial(trial)
    reason = record.reason or ""
    if record.ended:
        return True  # a final failure (diverged, oom, error): the cell is done, with a reason
    # An interrupted trial does not stand for its cell: dse.trials.signals queued a WAITING copy before failing it.
    history = trial.system_attrs.get("retry_history", [])
    return reason.startswith("worker died") and len(history) + 1 <= max_retry


def missing(study, labels, seeds: int, max_retry: int = 2) -> list[tuple[str, int]]:
    """The cells x seeds no trial stands for, seed by seed in grid order: a multi-seed table run partly holds
    whole seeds (every cell at seed 0 first), so its table and τ are complete at each seed."""
    have = set()
    for trial in study.get_trials(deepcopy=False):
        cell = cell_of(trial)
        if cell is not None and present(trial, max_retry):
            have.add(cell)
    return [(label, seed) for seed in range(seeds) for label in labels if (label, seed) not in have]


def enqueue_once(study, labels, seeds: int, max_retry: int = 2, wait_s: float = 600, poll_s: float = 0.2) -> int:
    """Enqueue the missing cells x seeds, in exactly one process per round; returns how many this one added."""
    import optuna

    storage = study._storage
    deadline = time.monotonic() + wait_s
    while True:
        done = int(storage.get_study_system_attrs(study._study_id).get(ROUND, 0))  # read before `missing`
        todo = missing(study, labels, seeds, max_retry)
        if not todo:
            return 0
        try:
            storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                     study_name=f"{study.study_name}:grid-lock:{done + 1}")
        except optuna.exceptions.DuplicatedStudyError:
            _wait_round(storage, study._study_id, done + 1, deadline, poll_s)
            continue
        for label, seed in todo:
            study.enqueue_trial({"cell": label, "seed": seed}, user_attrs={"label": label})
        storage.set_study_system_attr(study._study_id, ROUND, done + 1)
        return len(todo)


def _wait_round(storage, study_id: int, round_: int, deadline: float, poll_s: float) -> None:
    """Wait until the elected process has finished enqueueing round `round_`."""
    while int(storage.get_study_system_attrs(study_id).get(ROUND, 0)) < round_:
        if time.monotonic() > deadline:
            raise UserError(f"grid: another process took the enqueue lock (round {round_}) and never finished; "
                            f"if it died, delete the study '<name>:grid-lock:{round_}' from the storage")
        time.sleep(poll_s)


def has_work(study, poll_s: float = 1.0) -> bool:
    """Block until a WAITING trial exists (True) or none can come: nothing WAITING or RUNNING (False)."""
    import warnings

    from optuna.storages import fail_stale_trials

    beating = owners.beating(study._storage)
    while signals.requested() is None:
        states = {t.state.name for t in study._storage.get_all_trials(study._study_id, deepcopy=False)}
        if "WAITING" in states:
            return True
        if "RUNNING" not in states:
            return False
        if not beating:  # a journal or the gRPC proxy: dse's own leases (dse.trials.owners) stand in for heartbeats
            if not owners.pending(study):
                return False
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fail_stale_trials(study)  # a dead worker's trial becomes FAIL + a WAITING retry
        time.sleep(poll_s)
    return False


class WaitForWork:
    """Optuna callback for grid workers: go on while cells wait, wait while others run, else stop."""

    def __init__(self, poll_s: float = 1.0):
        self.poll_s = poll_s

    def __call__(self, study, trial) -> None:
        if not has_work(study, self.poll_s):
            study.stop()


TAKEN = "worker died"  # the reasons dse.storage and dse.trials.owners give a trial they take from its worker


def optimize(study, func, deadline: float | None = None, **kwargs) -> None:
    """`study.optimize(func, **kwargs)` that goes on when a trial of this process was taken from it.

    A live worker slower than the heartbeat's grace period (a paused machine, a long storage lock) has its trial
    failed as dead by another worker, which queues it again; dse.storage refuses this worker's COMPLETE, and
    Optuna raises out of optimize ('Cannot tell a FAIL trial'). The worker then prints one line and takes the
    next trial instead of exiting 1; its result is dropped and the retry trains the point, once. `deadline`
    (time.monotonic()) sets each call's timeout.
    """
    import sys

    import optuna

    current: dict = {}

    def run(trial):
        current["id"] = trial._trial_id
        return func(trial)

    while True:
        if deadline is not None:
            kwargs["timeout"] = max(deadline - time.monotonic(), 1.0)
        try:
            study.optimize(run, **kwargs)
            return
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            lost = current.pop("id", None)
            trial = None if lost is None else study._storage.get_trial(lost)
            reason = "" if trial is None else str(trial.user_attrs.get("reason", ""))
            if trial is None or trial.state.name != "FAIL" or not reason.startswith(TAKEN):
                raise
            print(f"trial {trial.number}: taken over by another worker ({reason}): this process was slower than "
                  "the heartbeat's grace period; its result is dropped and the retry trains the point",
                  file=sys.stderr, flush=True)


# ----- points of sampled studies: trained at most once per (point, seed), across workers and machines -----

CLAIM = "dse:claim:"


def _backend(storage):
    """The storage under Optuna's cache wrapper (an RDBStorage is wrapped; a JournalStorage is not)."""
    from optuna.storages._cached_storage import _CachedStorage

    return storage._backend if isinstance(storage, _CachedStorage) else storage


def claim(study, key: str, holder: int) -> int | None:
    """Take `key` for trial id `holder`, atomically; None when this call took it, else the id that holds it.

    RDB storages (SQLite, PostgreSQL, MySQL): one row in study_system_attributes, whose unique (study, key)
    index lets exactly one insert win. A journal: a marker study named '<study>:claim:<key>', whose name the
    log order makes unique; the gRPC proxy (whose attribute writes overwrite) the same marker, whose name the
    database's unique index makes unique. In memory (one process): a study attribute.
    """
    from optuna.storages import GrpcStorageProxy, JournalStorage, RDBStorage

    storage = _backend(study._storage)
    if isinstance(storage, RDBStorage):
        return _claim_rdb(storage, study._study_id, CLAIM + key, holder)
    if isinstance(storage, (JournalStorage, GrpcStorageProxy)):
        return _claim_journal(storage, study.study_name, key, holder)
    taken = storage.get_study_system_attrs(study._study_id).get(CLAIM + key)
    if taken is None:
        storage.set_study_system_attr(study._study_id, CLAIM + key, holder)
    return taken


MAX_HANDOVERS = 20  # take_over follows at most this many take-overs whose winner died before it wrote


def take_over(study, key: str, holder: int, old: int, dead=None) -> bool:
    """Hand `key` from trial id `old` (it died, was interrupted, or gave the key back) to trial id `holder`;
    True when this call did, False when another trial took it over first.

    Atomic like `claim`: the take-over of `old` is itself a claim, '<key>:from:<old>', so of several trials
    that find the same dead holder at once, exactly one takes the key (before, each wrote itself as the holder
    and each trained). A winner that died before it wrote the new holder would hold the key for good: when
    `dead(winner id)` says it is gone (or gave the key back), the key is taken over from it in turn."""
    for _ in range(MAX_HANDOVERS):
        won = claim(study, f"{key}:from:{old}", holder)
        if won is None or won == holder:
            _hold(study, key, holder)
            return True
        if dead is None or not dead(won):
            return False
        old = won
    return False


def _hold(study, key: str, holder: int) -> None:
    """Write `holder` as the holder of `key` (after take_over won the key)."""
    from optuna.storages import GrpcStorageProxy, JournalStorage

    storage = _backend(study._storage)
    if isinstance(storage, (JournalStorage, GrpcStorageProxy)):
        marker = storage.get_study_id_from_name(f"{study.study_name}:claim:{key}")
        storage.set_study_system_attr(marker, "holder", holder)
    else:
        storage.set_study_system_attr(study._study_id, CLAIM + key, holder)


def _claim_rdb(storage, study_id: int, name: str, holder: int) -> int | None:
    """Insert the claim row; a unique-key violation means another trial holds it."""
    import json

    from optuna.storages._rdb import models
    from sqlalchemy.exc import IntegrityError

    session = storage.scoped_session()
    try:
        session.add(models.StudySystemAttributeModel(study_id=study_id, key=name, value_json=json.dumps(holder)))
        session.commit()
        return None
    except IntegrityError:
        session.rollback()
        row = session.query(models.StudySystemAttributeModel).filter_by(study_id=study_id, key=name).one()
        return json.loads(row.value_json)
    finally:
        session.close()


def _claim_journal(storage, study_name: str, key: str, holder: int) -> int | None:
    """Create the marker study; the log order lets one creator win."""
    import optuna

    name = f"{study_name}:claim:{key}"
    try:
        marker = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name=name)
    except optuna.exceptions.DuplicatedStudyError:
        marker = storage.get_study_id_from_name(name)
        for _ in range(50):  # the winner writes its holder right after creating the marker
            taken = storage.get_study_system_attrs(marker).get("holder")
            if taken is not None:
                return taken
            time.sleep(0.05)
        return -1
    storage.set_study_system_attr(marker, "holder", holder)
    return None
