"""The trial function and the Optuna pieces around it: samplers, pruners, study creation, grid queue.

One trial: suggest a Point (or pop a grid cell), set its geometry from the data, count params and FLOPs,
reject it before training when it is over the space's budget, train it, record everything as trial user
attributes, and return the objectives. A failing trial never stops the study.

Trial states and the `status` attribute:
    COMPLETE  status ok
    COMPLETE  status rejected (reason over_budget): never trained. Stored with the worst accuracy (0) and its
              exact costs, and constraint values > 0, so every sampler sees an infeasible point (NSGA-II and
              GP read COMPLETE trials only); reports, tables and Optuna's best_trials leave it out.
    FAIL      status duplicate: the sampler proposed a point (and seed) that another trial holds (trained,
              running, pruned or failed). It is not trained again and carries no values, so no sampler
              counts a point twice. The claim is atomic in the storage (dse.trials.claims.claim), across workers
              and machines. Also a moasha piece whose promotion another piece holds (dse.trials.moasha.start).
    FAIL      status skipped: a moasha piece popped where its checkpoint cannot be read; its chain stays paused.
    PRUNED    status pruned (the pruner stopped it) or rejected (reason infeasible: the sampled values break
              a space check; no point exists to count), or paused (pruner moasha: stopped at a rung with a
              checkpoint; dse.trials.moasha.promote may queue a later piece that resumes it).
    FAIL      status diverged | oom | failed, with `reason`
Rejected and duplicate trials do not count toward n_trials: they cost no training. Nor do the later pieces of
a moasha chain (`resume_of` set): its first piece counted the point.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from dse.errors import UserError, choose
from dse.record import TrialRecord, save

# Trials that count toward study.n_trials: finished ones (a FAIL counts only when our objective recorded
# why; a trial failed by a stale heartbeat is retried instead).
FINISHED = ("COMPLETE", "PRUNED")


class TrialFailed(Exception):
    """A trial ended without a result (diverged, out of memory, error); the study goes on."""


def make_sampler(sampler, seed: int, multi: bool):
    """The Optuna sampler of a dse.trials.sampling.SamplerConfig (name tpe|nsga2|gp|random|grid, Optuna's options).

    Every one of them learns from over-budget points: those are COMPLETE trials with constraint values > 0
    (set with trial.set_constraint), which TPE, NSGA-II (constrained domination) and GP read.
    """
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    opts = {k: v for k, v in sampler.options.items() if v is not None}

    def tpe():
        return optuna.samplers.TPESampler(seed=seed, **opts)

    def nsga2():
        return optuna.samplers.NSGAIISampler(seed=seed, **opts)

    def random():
        return optuna.samplers.RandomSampler(seed=seed)

    def gp():
        return optuna.samplers.GPSampler(seed=seed, **opts)

    table = {"tpe": tpe, "nsga2": nsga2, "gp": gp, "random": random, "grid": random}
    return choose("sampler", sampler.name, table)()


def make_pruner(name: str, max_epochs: int):
    """The Optuna pruner by name (single-objective studies only, except dominance: see dse.trials.dominance)."""
    import optuna

    from dse.trials.dominance import DominancePruner

    table = {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 2)),
        "dominance": DominancePruner,  # a NopPruner: the fit's callback prunes (dse.trials.pruning)
        "moasha": optuna.pruners.NopPruner,  # the fit's callback pauses (dse.trials.pruning.MoashaCallback)
    }
    return choose("pruner", name, table)()


def open_study(storage, study, sampler, pruner, space_name: str | None):
    """Load the study if it exists (checking it is the same kind), else create it.

    Processes that start at once (array tasks, pool workers) may all fail to load a new study; the one whose
    create loses the race loads the winner's study instead."""
    import optuna

    try:
        existing = optuna.load_study(study_name=study.name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is None:
        try:
            created = optuna.create_study(study_name=study.name, storage=storage, sampler=sampler, pruner=pruner,
                                          directions=study.directions)
        except optuna.exceptions.DuplicatedStudyError:  # another process created it since our load
            existing = optuna.load_study(study_name=study.name, storage=storage, sampler=sampler, pruner=pruner)
        else:
            created.set_user_attr("space", space_name)
            created.set_user_attr("objectives", list(study.objectives))
            return created
    stored = [d.name.lower() for d in existing.directions]
    if stored != study.directions:
        raise UserError(f"study.name: {study.name!r} already exists in this storage with directions {stored}, "
                        f"not {study.directions} ({', '.join(study.objectives)}); pick another study.name")
    old_space = existing.user_attrs.get("space")
    if old_space and space_name and old_space != space_name:
        raise UserError(f"study.name: {study.name!r} already exists over space {old_space!r}, not "
                        f"{space_name!r}; pick another study.name")
    return existing


def counted(trial) -> bool:
    """Does this finished trial count toward n_trials? (Points rejected before training do not.)"""
    name, record = trial.state.name, TrialRecord.from_trial(trial)
    if record.untrained or record.resume_of is not None:
        return False
    return name in FINISHED or (name == "FAIL" and record.ended)


def rejected(trial) -> bool:
    """Was this trial's point not trained: refused (over budget, infeasible) or already trained (duplicate)?"""
    return TrialRecord.from_trial(trial).untrained


def waiting(optuna_study) -> int:
    """Number of enqueued trials not yet started."""
    from optuna.trial import TrialState

    return len(optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def with_geometry(point, data):
    """The point at the data's image size, channels and classes."""
    return point.replace(image_size=int(data.image_size), in_chans=int(data.in_chans),
                         num_classes=int(data.num_classes))


def violations(space, point) -> dict[str, float]:
    """The space's relative bound violations ('flops.max': (flops - max) / max, ...; > 0: over budget)."""
    return space.violations(point) if space is not None else {}


@dataclass
class Objective:
    """The trial function: callable(trial) -> objective values."""

    study: object  # dse.study.Study
    space: object
    cells: dict | None
    data: object
    recipe: object
    loggers: object  # dse.results.wandb_log.Loggers
    prune: bool = False
    progress: bool = True
    thin: tuple = (1.0, 4)  # (width_scale, min_width): train the point thinned (the CPU proxy of a table)
    settings: dict | None = None  # dse.provenance.settings: recorded on every trial
    deadline: float | None = None  # time.monotonic() by which the study ends: a trial that cannot finish stops
    checkpoints: Path | None = None  # where moasha's paused pieces write their checkpoints

    def __call__(self, trial):
        import optuna

        from dse.trials import owners
        from dse.errors import Infeasible

        owners.mark(trial)  # this host+process owns the trial: if it dies, the next dse process here retries it
        try:
            point, label, seed = self.suggest(trial)
            point = with_geometry(point, self.data)
        except Infeasible as exc:  # the sampled values break one of the space's checks
            # TPE reads constraints of pruned trials too
            _save(trial, TrialRecord(reason=f"infeasible: {exc}", status="rejected"), constraints={"checks": 1.0})
            raise optuna.TrialPruned("infeasible") from None
        except UserError as exc:  # values that make no valid Point (Point.check): the trial fails, the study goes
            # on. A space that makes no valid point stops before the first trial (dse.trials.budget samples it).
            return self.finish(trial, TrialRecord(), "failed", f"invalid: {exc}")
        record = TrialRecord(point=point.to_dict(), point_id=point.id, seed=seed, label=label)
        try:
            from dse.cost import measures

            counts = measures(point)
        except UserError as exc:
            return self.finish(trial, record, "failed", f"invalid: {exc}")
        record = dataclasses.replace(record, **{k: int(v) for k, v in counts._asdict().items()},  # params, flops, ...
                                     **self.latency(trial, point), settings=self.settings or None)
        if self.cells is None:
            taken = self.repeated(trial, point.id, seed)
            if taken is not None:
                _save(trial, dataclasses.replace(record, **taken))
                raise TrialFailed("duplicate")
        over = violations(self.space, point)  # stored as the trial's constraints with its record (one commit)
        if any(v > 0 for v in over.values()):  # COMPLETE and infeasible: every sampler sees it, no result does
            record = _save(trial, dataclasses.replace(record, reason="over_budget", status="rejected"),
                           constraints=over)
            return self.values(dataclasses.replace(record, val_acc=0.0))
        trained = point.thinned(*self.thin)
        if trained is not point:  # a proxy: the table keeps the full point's counts, the trained net is smaller
            small = measures(trained)
            record = dataclasses.replace(record, width_scale=self.thin[0], trained_params=int(small.params),
                                         trained_flops=int(small.flops))
        from dse.train import zerocost  # the trained net's scores at its initialization (~0.3 CPU s at 10 MFLOPs)

        record = dataclasses.replace(record, zerocost=zerocost.for_trial(trained, self.data, seed))
        # Stored before training, the outcome at the end: while the trial trains, other processes read its point
        # id (dse.trials.sampling leaves held points out) and its costs (dse.trials.dominance compares them at
        # each rung); a stopped or killed trial keeps them, and its re-queued copy inherits them
        # (dse.trials.signals, dse.trials.owners).
        stored = _save(trial, record, constraints=over)
        result = self.train_seeds(trial, trained, seed, record.params, record.flops)
        return self.finish(trial, record, result.status, result.reason, result, stored)

    def repeated(self, trial, point_id: str, seed: int) -> dict | None:
        """Claim (point, seed) for this trial; None when it may train, else the duplicate's record fields.

        The claim is atomic in the storage, so two workers or machines never train one point at once. A
        holder that died or was interrupted hands the claim to this trial (a retry of the same point), except
        a point that ran out of time in this process: it waits for the next run (dse.trials.deadline).
        """
        from dse.trials import claims
        from dse.trials import signals
        key = f"{point_id}:{seed}"
        stopped = signals.ran_out_of_time(key)
        if stopped is not None:  # ran out of time in this run: queued for the next one, not tried again here
            return {"duplicate_of": stopped, "status": "duplicate",
                    "reason": f"same point and seed as trial {stopped} (out of time in this run; queued for the "
                              "next run); not trained again"}
        chain = TrialRecord.from_trial(trial).resume_of
        if chain is not None:  # a later piece of a moasha chain: the promotion it resumes is claimed first
            from dse.trials import moasha

            taken = moasha.start(trial)
            if taken is not None:
                return taken
        holder = claims.claim(trial.study, key, trial._trial_id)
        if holder is None:
            return None
        other = _trial_by_id(trial.study, holder)
        if other is not None and other.state.name == "RUNNING" and \
                trial.storage.get_trial_system_attrs(trial._trial_id).get("dse:requeued_from") == other.number:
            other = _ended(trial.study, holder)  # its own copy, queued on its way out: it is FAIL in a moment
        mine = trial._trial_id
        if other is not None and chain is not None and chain in (other.number, TrialRecord.from_trial(other).resume_of):
            # a later piece of the point's chain (moasha): the promotion's claim (moasha.start) made it the only one
            if claims.take_over(trial.study, key, mine, holder, lambda won: _died(trial.study, won)):
                return None
            other = _trial_by_id(trial.study, claims.claim(trial.study, key, mine) or holder)
        elif other is not None and other.state.name == "FAIL" and not TrialRecord.from_trial(other).ended:
            # died or interrupted: retry it here, unless another retry of it took the point first
            if claims.take_over(trial.study, key, mine, holder, lambda won: _died(trial.study, won)):
                return None
            other = _trial_by_id(trial.study, claims.claim(trial.study, key, mine) or holder)
        what = "another trial" if other is None else f"trial {other.number} ({_outcome(other)})"
        return {"duplicate_of": None if other is None else other.number, "status": "duplicate",
                "reason": f"same point and seed as {what}; not trained again"}

    def suggest(self, trial):
        """(Point, cell label or None, training seed) for this trial."""
        base = int(getattr(self.recipe, "seed", 0))
        if self.cells is None:  # a seed-noise repeat (dse.trials.sampling) carries its seed
            again = TrialRecord.from_trial(trial)
            return self.space.suggest(trial), None, base if again.repeat_of is None else int(again.seed)
        if TrialRecord.from_trial(trial).label is None:  # enqueued cells carry their label; none: the queue ran dry
            trial.study.stop()
            save(trial, TrialRecord(reason="grid_exhausted", status="skipped"))
            raise TrialFailed("grid exhausted")
        label = trial.suggest_categorical("cell", list(self.cells))
        seed = trial.suggest_int("seed", 0, self.study.seeds - 1)
        return self.cells[label], label, base + seed

    def train_seeds(self, trial, point, seed, params, flops):
        """Fit a sampled point once per seed (study.seeds; a grid cell is one seed) and return the mean.

        The pruner (and the W&B run) follow the first seed; the others run only when it finished.
        """
        n = self.study.seeds if self.cells is None else 1
        first = self.train(trial, point, seed, params, flops)
        if n == 1 or first.status != "ok":
            return first
        runs = [first] + [self.train(trial, point, seed + k, params, flops, first_seed=False) for k in range(1, n)]
        return next((r for r in runs if r.status != "ok"), None) or _Seeds.of(runs)

    def train(self, trial, point, seed, params, flops, first_seed: bool = True):
        """Fit the point; any exception becomes a 'failed' result."""
        from dse.train import fit as train
        recipe = dataclasses.replace(self.recipe, seed=seed) if hasattr(self.recipe, "seed") else self.recipe
        logger = self.loggers.trial(trial.number, point, params, flops, trial.params) if first_seed else None
        start = time.time()
        mine = TrialRecord.from_trial(trial)
        resume = mine.checkpoint if first_seed and mine.resume_of is not None else None
        try:
            return train.fit(point, self.data, recipe, logger=logger, progress=self.progress,
                             callbacks=self.callbacks(trial, recipe, first_seed, seed), resume=resume)
        except UserError:  # bad input (a corrupt image, a bad setting): every trial would fail alike; stop here
            raise
        except Exception as exc:  # the study goes on; the reason is kept
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return _Failed(status="failed", reason=f"{type(exc).__name__}: {msg}"[:300],
                           seconds=time.time() - start)
        finally:
            if first_seed:
                self.loggers.trial_done(trial.number)

    def callbacks(self, trial, recipe, first_seed: bool, seed: int = 0) -> list:
        """The fit's callbacks: the deadline watch (dse.trials.deadline; single-process fits of a study with a
        timeout), a progress line when no bar shows (dse.trials.progress) and the pruner's (dse.trials.pruning;
        the first seed of a study with a pruner)."""
        out = []
        one = str(getattr(recipe, "devices", 1)) in ("1", "auto") and getattr(recipe, "strategy", "auto") == "auto"
        if self.deadline is not None and one:
            from dse.trials import deadline
            out.append(deadline.callback(self.deadline))
        if not self.progress:  # no bar: a line at most every 30 s instead (dse.trials.progress)
            from dse.trials import progress  # loads Lightning

            out.append(progress.Progress(f"trial {trial.number}"))
        if self.prune and first_seed and self.study.pruner == "moasha":
            out.append(self.moasha(trial, recipe, seed))
        elif self.prune and first_seed:
            from dse.trials import pruning  # loads Lightning

            pruner = pruning.callback(trial)
            out += [pruner] if pruner is not None else []
        return out

    def moasha(self, trial, recipe, seed: int):
        """The moasha callback of this piece: its chain, the rung it resumes from, where it would pause."""
        from dse.trials import moasha, pruning  # loads Lightning

        settings = self.study.moasha or {}
        eta, min_rung = int(settings.get("eta", moasha.ETA)), int(settings.get("min_rung", moasha.MIN_RUNG))
        chain, mine = moasha.root(trial), TrialRecord.from_trial(trial)
        folder = self.checkpoints / f"{chain}-seed{seed}"
        self.paused_at = pruning.MoashaCallback(trial, moasha.rungs(int(recipe.epochs), min_rung, eta), eta, chain,
                                                lambda epoch: folder / f"rung-{epoch}.ckpt", int(mine.from_rung or 0),
                                                score=str(settings.get("rung_score", moasha.RUNG_SCORE)))
        return self.paused_at

    def finish(self, trial, record: TrialRecord, status: str, reason: str | None, result=None,
               stored: TrialRecord | None = None):
        """Add the outcome to the trial's record and store what `stored` lacks; return the objectives or raise
        pruned/failed."""
        import optuna

        if result is not None:
            several = {k: getattr(result, k) for k in ("val_accs", "val_acc_std", "test_accs", "seeds")
                       if getattr(result, k, None) is not None}  # several seeds: each, and the spread
            history = getattr(result, "history", None)
            record = dataclasses.replace(
                record, epochs=getattr(result, "epochs", None), train_seconds=getattr(result, "seconds", None),
                cpu_seconds=getattr(result, "cpu_seconds", None), val_acc=getattr(result, "val_acc", None),
                test_acc=getattr(result, "test_acc", None), history=_plain(history) if history else None, **several)
        if status == "paused":  # moasha: the checkpoint a later piece resumes from
            epoch, path = self.paused_at.paused
            record = dataclasses.replace(record, rung=epoch, checkpoint=path)
        elif status == "ok" and self.study.pruner == "moasha":
            record = dataclasses.replace(record, rung=record.epochs)
        record = _save(trial, dataclasses.replace(record, reason=reason or "", status=status), stored)
        resumed = TrialRecord.from_trial(trial)
        if status == "ok" and resumed.resume_of is not None and resumed.checkpoint:  # the chain is done
            import shutil

            shutil.rmtree(Path(resumed.checkpoint).parent, ignore_errors=True)
        if status in ("pruned", "paused"):
            raise optuna.TrialPruned(reason or status)
        if status != "ok":
            raise TrialFailed(f"{status}: {reason}")
        return self.values(record)

    def latency(self, trial, point) -> dict:
        """The point's measured latency on this trial's device (dse.train.latency), cached in the study by point
        id, as record fields; {} when latency is no objective of the study."""
        if "latency" not in self.study.objectives:
            return {}
        from dse.train import latency
        accel = str(getattr(self.recipe, "accelerator", None) or "auto")
        device = "cpu"
        if accel in ("auto", "gpu", "cuda"):
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        ms, _ = latency.cached(trial.study, point, device)
        return {"latency_ms": float(ms), "latency_device": latency.device_name(device)}

    def values(self, record: TrialRecord):
        """Objective values in the study's order."""
        out = [float(record.objective(o)) for o in self.study.objectives]
        return out[0] if len(out) == 1 else out


class _Batch:
    """A running trial's attribute writes, gathered and stored in one transaction by `flush` (_write_attrs):
    dse.record.save writes a record field by field through set_user_attr, one commit each (9-15 per trial)."""

    def __init__(self, trial):
        self.trial, self.user, self.constraints = trial, {}, {}

    def set_user_attr(self, key: str, value) -> None:
        self.user[key] = value

    def set_constraint(self, key: str, value: float) -> None:
        self.constraints[key] = value

    def flush(self) -> None:
        if self.user or self.constraints:
            _write_attrs(self.trial, self.user, self.constraints)
        self.user, self.constraints = {}, {}


def _save(trial, record: TrialRecord, stored: TrialRecord | None = None, constraints: dict | None = None):
    """dse.record.save (and the trial's constraints first) in one storage transaction; returns `record`."""
    batch = _Batch(trial)
    for name, value in (constraints or {}).items():
        batch.set_constraint(name, value)
    out = save(batch, record, stored)
    batch.flush()
    return out


def _write_attrs(trial, user: dict, constraints: dict) -> None:
    """Store user attrs and constraints (Optuna's 'constraints:<name>' system attrs) on a running trial: on an
    RDB storage in one transaction of one upsert per table, elsewhere one write each through the trial."""
    import json
    import math
    import sqlite3

    values = {}
    for name, value in constraints.items():
        value = float(value)
        if math.isnan(value):
            raise ValueError(f"constraint {name!r}: NaN is not allowed")
        values[name] = value
    backend = getattr(trial, "storage", None)
    backend = getattr(backend, "_backend", backend)  # under Optuna's cache
    insert = None
    try:
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy.dialects import postgresql, sqlite

        if isinstance(backend, RDBStorage) and hasattr(trial, "_cached_frozen_trial"):
            upsert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
            if sqlite3.sqlite_version_info < (3, 24):  # no ON CONFLICT
                upsert.pop("sqlite")
            insert = upsert.get(backend.engine.name)
    except ImportError:  # Optuna's private layout moved: the public path below
        insert = None
    if insert is None:  # a journal, MySQL, a FixedTrial: one write each
        for name, value in values.items():
            trial.set_constraint(name, value)
        for key, value in user.items():
            trial.set_user_attr(key, value)
        return
    tid = trial._trial_id
    tables = ((models.TrialSystemAttributeModel, {f"constraints:{k}": v for k, v in values.items()}),
              (models.TrialUserAttributeModel, user))
    with _create_scoped_session(backend.scoped_session) as session:
        row = models.TrialModel.find_or_raise_by_id(tid, session)
        backend.check_trial_is_updatable(tid, row.state)
        for model, attrs in tables:
            if attrs:
                stmt = insert(model).values([{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                                             for k, v in attrs.items()])
                session.execute(stmt.on_conflict_do_update(index_elements=[model.trial_id, model.key],
                                                           set_={"value_json": stmt.excluded.value_json}))
    cached = trial._cached_frozen_trial  # as Trial.set_user_attr / set_constraint keep it
    cached.user_attrs.update(user)
    for key, value in tables[0][1].items():
        cached.system_attrs[key] = value


def _trial_by_id(optuna_study, trial_id: int):
    """The FrozenTrial with storage id `trial_id`, or None."""
    try:
        return optuna_study._storage.get_trial(trial_id)
    except (KeyError, ValueError):
        return None


def _died(optuna_study, trial_id: int) -> bool:
    """Did the trial with storage id `trial_id` end without an outcome (killed or interrupted), or never exist
    (a journal claim whose creator died before it wrote its holder: -1)?"""
    other = _trial_by_id(optuna_study, trial_id)
    return other is None or (other.state.name == "FAIL" and not TrialRecord.from_trial(other).ended)


def _ended(optuna_study, trial_id: int, wait_s: float = 60.0, poll_s: float = 0.2):
    """The trial with storage id `trial_id` once it has ended, or as it is after `wait_s`.

    An interrupted trial queues its WAITING copy (dse.trials.signals) before Optuna marks it FAIL, so another
    worker can pop the copy while its source is still RUNNING. The copy waits for it to end instead of calling
    itself a duplicate; a source killed in that moment stays RUNNING until it is reaped, and the reaper queues
    another copy (dse.trials.owners)."""
    deadline = time.monotonic() + wait_s
    while True:
        other = _trial_by_id(optuna_study, trial_id)
        if other is None or other.state.name != "RUNNING" or time.monotonic() > deadline:
            return other
        time.sleep(poll_s)


def _outcome(trial) -> str:
    """'running', 'ok', 'rejected', ...: what a trial is or became."""
    return TrialRecord.from_trial(trial).status or trial.state.name.lower()


@dataclass
class _Seeds:
    """The mean of several seeds' fits of one point (status ok)."""

    val_acc: float
    val_acc_std: float
    val_accs: list
    test_acc: float | None
    test_accs: list | None
    seconds: float
    epochs: int
    history: list
    seeds: int
    status: str = "ok"
    reason: str = ""
    cpu_seconds: float = 0.0

    @classmethod
    def of(cls, runs) -> "_Seeds":
        """Mean and sample standard deviation of the runs' validation (and test) accuracies."""
        import statistics

        accs = [float(r.val_acc) for r in runs]
        tests = [r.test_acc for r in runs]
        tests = [float(t) for t in tests] if all(t is not None for t in tests) else None
        return cls(val_acc=statistics.fmean(accs), val_acc_std=statistics.stdev(accs), val_accs=accs,
                   test_acc=statistics.fmean(tests) if tests else None, test_accs=tests,
                   seconds=sum(r.seconds for r in runs), epochs=runs[0].epochs, history=runs[0].history,
                   seeds=len(runs), cpu_seconds=sum(getattr(r, "cpu_seconds", 0.0) for r in runs))


@dataclass
class _Failed:
    """The result of a fit that raised."""

    status: str
    reason: str
    seconds: float
    epochs: int = 0
    val_acc: float | None = None
    test_acc: float | None = None
    history: tuple = ()


def _plain(value):
    """JSON-safe copy (floats from tensors, tuples to lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


MAX_REJECTED = 20  # per counted trial: a space whose budget admits (almost) nothing stops instead of spinning


class StopAt:
    """Callback: stop when `total` trials count (several workers share the count), the grid queue is empty,
    or more than MAX_REJECTED x total points were rejected before training.

    A finished trial never changes, so each is judged once (by storage id); only unfinished trials are looked
    at again. At 10k trials a call costs a dict lookup per trial, not a record per trial twice (~380 ms)."""

    def __init__(self, total: int, grid: bool, drain: bool = False):
        self.total = total
        self.grid = grid
        self.drain = drain  # moasha: queued pieces (promotions) run even when the point count is reached
        self.judged: set[int] = set()  # ids of finished trials already in the counts
        self.counted = self.rejected = 0

    def counts(self, optuna_study) -> tuple[int, int]:
        """(counted, rejected) over every trial of the study, as the storage holds them now."""
        extra_counted = extra_rejected = 0
        for t in optuna_study.get_trials(deepcopy=False):
            if t._trial_id in self.judged:
                continue
            c, r = counted(t), rejected(t)
            if t.state.is_finished():
                self.judged.add(t._trial_id)
                self.counted, self.rejected = self.counted + c, self.rejected + r
            else:
                extra_counted, extra_rejected = extra_counted + c, extra_rejected + r
        return self.counted + extra_counted, self.rejected + extra_rejected

    def __call__(self, optuna_study, trial) -> None:
        if self.grid and waiting(optuna_study) == 0:
            optuna_study.stop()
            return
        n_counted, n_rejected = self.counts(optuna_study)
        if n_counted >= self.total and not (self.drain and waiting(optuna_study)):
            optuna_study.stop()
        elif n_rejected > MAX_REJECTED * self.total:
            print(f"stopping: over {MAX_REJECTED * self.total} proposed points were over the budget or already "
                  "trained; widen the constraints or the space")
            optuna_study.stop()
