"""The trial function and the Optuna pieces around it: samplers, pruners, study creation, grid queue.

One trial: suggest a Point (or pop a grid cell), set its geometry from the data, count params and FLOPs,
reject it before training when it is over the space's budget, train it, record everything as trial user
attributes, and return the objectives. A failing trial never stops the study.

Trial states and the `status` attribute:
    COMPLETE  status ok
    COMPLETE  status duplicate: the sampler proposed a point (and seed) already trained in this study; the
              stored result is returned without training and the trial does not count toward n_trials
    PRUNED    status pruned (the pruner stopped it) or rejected (reason over_budget or infeasible: never
              trained; the constraint values are set, so TPE learns the infeasible region). Rejected trials
              do not count toward n_trials: they cost no training.
    FAIL      status diverged | oom | failed, with `reason`
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass

from dse.errors import UserError, choose

# Trials that count toward study.n_trials: finished ones (a FAIL counts only when our objective recorded
# why; a trial failed by a stale heartbeat is retried instead).
FINISHED = ("COMPLETE", "PRUNED")


class TrialFailed(Exception):
    """A trial ended without a result (diverged, out of memory, error); the study goes on."""


def make_sampler(cfg: dict, seed: int, multi: bool):
    """The Optuna sampler for a sampler config ({name: tpe|nsga2|random|grid, ...})."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    opts = {k: v for k, v in cfg.items() if k != "name" and v is not None}

    def tpe():
        return optuna.samplers.TPESampler(seed=seed, **opts)

    def nsga2():
        return optuna.samplers.NSGAIISampler(seed=seed, **opts)

    def random():
        return optuna.samplers.RandomSampler(seed=seed)

    return choose("sampler", cfg.get("name"), {"tpe": tpe, "nsga2": nsga2, "random": random, "grid": random})()


def make_pruner(name: str, max_epochs: int):
    """The Optuna pruner by name (single-objective studies only)."""
    import optuna

    table = {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 2)),
    }
    return choose("pruner", name, table)()


def open_study(storage, study, sampler, pruner, space_name: str | None):
    """Load the study if it exists (checking it is the same kind), else create it."""
    import optuna

    try:
        existing = optuna.load_study(study_name=study.name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is not None:
        stored = [d.name.lower() for d in existing.directions]
        if stored != study.directions:
            raise UserError(f"study.name: {study.name!r} already exists in this storage with directions {stored}, "
                            f"not {study.directions} ({', '.join(study.objectives)}); pick another study.name")
        old_space = existing.user_attrs.get("space")
        if old_space and space_name and old_space != space_name:
            raise UserError(f"study.name: {study.name!r} already exists over space {old_space!r}, not "
                            f"{space_name!r}; pick another study.name")
        return existing
    created = optuna.create_study(study_name=study.name, storage=storage, sampler=sampler, pruner=pruner,
                                  directions=study.directions)
    created.set_user_attr("space", space_name)
    created.set_user_attr("objectives", list(study.objectives))
    return created


def counted(trial) -> bool:
    """Does this finished trial count toward n_trials? (Points rejected before training do not.)"""
    name = trial.state.name
    if trial.user_attrs.get("status") in ("rejected", "duplicate"):
        return False
    return name in FINISHED or (name == "FAIL" and "status" in trial.user_attrs)


def rejected(trial) -> bool:
    """Was this trial's point not trained: refused (over budget, infeasible) or already trained (duplicate)?"""
    return trial.user_attrs.get("status") in ("rejected", "duplicate")


def enqueue_grid(optuna_study, labels: list[str], seeds: int) -> int:
    """Enqueue every cell x seed that has no trial yet (waiting, running or counted); returns how many."""
    have = set()
    for t in optuna_study.get_trials(deepcopy=False):
        if "cell" in t.params or "cell" in t.system_attrs.get("fixed_params", {}):
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}
            if t.state.name in ("WAITING", "RUNNING") or counted(t):
                have.add((params["cell"], int(params.get("seed", 0))))
    added = 0
    for label in labels:
        for seed in range(seeds):
            if (label, seed) not in have:
                optuna_study.enqueue_trial({"cell": label, "seed": seed}, user_attrs={"label": label})
                added += 1
    return added


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
    loggers: object  # dse.wandb_log.Loggers
    prune: bool = False
    progress: bool = True
    thin: tuple = (1.0, 4)  # (width_scale, min_width): train the point thinned (the CPU proxy of a table)

    def __call__(self, trial):
        import optuna

        from dse.space.space import Infeasible

        try:
            point, label, seed = self.suggest(trial)
        except Infeasible as exc:  # the sampled values break one of the space's checks
            trial.set_user_attr("status", "rejected")
            trial.set_user_attr("reason", f"infeasible: {exc}")
            raise optuna.TrialPruned("infeasible") from None
        point = with_geometry(point, self.data)
        trial.set_user_attr("point", point.to_dict())
        trial.set_user_attr("point_id", point.id)
        trial.set_user_attr("seed", seed)
        if label is not None:
            trial.set_user_attr("label", label)
        try:
            from dse import complexity

            params, flops = complexity(point)
        except UserError as exc:
            return self.finish(trial, "failed", f"invalid: {exc}")
        trial.set_user_attr("params", int(params))
        trial.set_user_attr("flops", int(flops))
        if self.cells is None:  # a sampler that proposes a point it already trained gets the stored result
            twin = _trained_twin(trial, point.id, seed)
            if twin is not None:
                for key in ("val_acc", "test_acc", "epochs", "width_scale", "trained_params", "trained_flops"):
                    if key in twin.user_attrs:
                        trial.set_user_attr(key, twin.user_attrs[key])
                trial.set_user_attr("status", "duplicate")
                trial.set_user_attr("reason", f"same point and seed as trial {twin.number} (not retrained)")
                return self.values(trial.user_attrs)
        over = violations(self.space, point)
        for name, value in over.items():
            trial.set_constraint(name, value)
        if any(v > 0 for v in over.values()):
            trial.set_user_attr("status", "rejected")
            trial.set_user_attr("reason", "over_budget")
            raise optuna.TrialPruned("over_budget")
        trained = point.thinned(*self.thin)
        if trained is not point:  # a proxy: the table keeps the full point's counts, the trained net is smaller
            small = complexity(trained)
            trial.set_user_attr("width_scale", self.thin[0])
            trial.set_user_attr("trained_params", int(small.params))
            trial.set_user_attr("trained_flops", int(small.flops))
        result = self.train(trial, trained, seed, params, flops)
        return self.finish(trial, result.status, result.reason, result)

    def suggest(self, trial):
        """(Point, cell label or None, training seed) for this trial."""
        base = int(getattr(self.recipe, "seed", 0))
        if self.cells is None:
            return self.space.suggest(trial), None, base
        if "label" not in trial.user_attrs:  # not an enqueued cell: the queue ran dry (another worker took it)
            trial.study.stop()
            trial.set_user_attr("status", "skipped")
            trial.set_user_attr("reason", "grid_exhausted")
            raise TrialFailed("grid exhausted")
        label = trial.suggest_categorical("cell", list(self.cells))
        seed = trial.suggest_int("seed", 0, self.study.seeds - 1)
        return self.cells[label], label, base + seed

    def train(self, trial, point, seed, params, flops):
        """Fit the point; any exception becomes a 'failed' result."""
        from dse import train

        recipe = dataclasses.replace(self.recipe, seed=seed) if hasattr(self.recipe, "seed") else self.recipe
        logger = self.loggers.trial(trial.number, point, params, flops, trial.params)
        start = time.time()
        try:
            return train.fit(point, self.data, recipe, trial=trial if self.prune else None, logger=logger,
                             progress=self.progress)
        except Exception as exc:  # the study goes on; the reason is kept
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return _Failed(status="failed", reason=f"{type(exc).__name__}: {msg}"[:300],
                           seconds=time.time() - start)
        finally:
            self.loggers.trial_done(trial.number)

    def finish(self, trial, status: str, reason: str | None, result=None):
        """Record the outcome as user attributes; return the objectives or raise pruned/failed."""
        import optuna

        if result is not None:  # the numbers first: another worker may read `status` as soon as it is set
            for key, attr in (("epochs", "epochs"), ("train_seconds", "seconds"), ("val_acc", "val_acc"),
                              ("test_acc", "test_acc")):
                trial.set_user_attr(key, getattr(result, attr, None))
            history = getattr(result, "history", None)
            if history:
                trial.set_user_attr("history", _plain(history))
        trial.set_user_attr("reason", reason or "")
        trial.set_user_attr("status", status)
        if status == "pruned":
            raise optuna.TrialPruned(reason or "pruned")
        if status != "ok":
            raise TrialFailed(f"{status}: {reason}")
        return self.values(trial.user_attrs)

    def values(self, attrs: dict):
        """Objective values in the study's order."""
        acc = float(attrs["val_acc"])
        table = {"accuracy": acc, "error": 1.0 - acc, "flops": float(attrs["flops"]),
                 "params": float(attrs["params"])}
        out = [table[o] for o in self.study.objectives]
        return out[0] if len(out) == 1 else out


def _trained_twin(trial, point_id: str, seed: int):
    """A completed, trained trial of this study with the same point id and seed, or None."""
    from optuna.trial import TrialState

    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if a.get("point_id") == point_id and a.get("status") == "ok" and a.get("seed") == seed:
            return t
    return None


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
    or more than MAX_REJECTED x total points were rejected before training."""

    def __init__(self, total: int, grid: bool):
        self.total = total
        self.grid = grid

    def __call__(self, optuna_study, trial) -> None:
        trials = optuna_study.get_trials(deepcopy=False)
        if self.grid and waiting(optuna_study) == 0:
            optuna_study.stop()
        elif sum(counted(t) for t in trials) >= self.total:
            optuna_study.stop()
        elif sum(rejected(t) for t in trials) > MAX_REJECTED * self.total:
            print(f"stopping: over {MAX_REJECTED * self.total} proposed points were over the budget or already "
                  "trained; widen the constraints or the space")
            optuna_study.stop()
