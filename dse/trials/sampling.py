"""Start-up trials inside the budget: a sampler wrapper that draws its first points from the feasible region.

Samplers begin with random trials (TPE's `n_startup_trials`, GP's, NSGA-II's first generation). Drawn
blindly from a space whose budget admits a few percent of it, most of those trials are rejected before
training, and the model-based phase then starts with next to nothing learned. dse knows every point's cost
before training, so `FeasibleStart` draws the first `n` trained points at random from inside the budget
(the space's own seeded rejection sampling, analytic and cheap) and hands over to the inner sampler after
that. With `n = None` it always draws inside the budget (random search within the budget). Each worker seeds
its own draws, so workers spread out.

A repeat escapes at random. A point that another trial holds is not trained again (`dse.trials.objective`: a FAIL
trial with status `duplicate`), and FAIL trials teach a model-based sampler nothing, so TPE or GP, unchanged,
proposes the same point again and again and the search stalls on it. After a duplicate the next trial of
this worker is drawn at random inside the budget instead, which does teach the inner sampler something new.

The end of a timed study is packed. Given the study's deadline, once less time is left than twice its longest
trained trial, each next point is one of IN_TIME_DRAWS random points inside the budget, picked to fill 80% of
the time left with as many trials as still fit (dse.trials.deadline.pick_in_time: training seconds predicted from
activations by the trained trials), instead of the inner sampler's, which knows nothing of time. Points that
another trial already holds are left out of those draws: they would come back as repeats.

One point is trained twice, for the seed noise. With `repeat_after` K (`study.noise_after`; the default study's
is 3), once the study holds K trained points and none was repeated, the next trial is the point of these that
trained fastest, with the next seed (an enqueued trial carrying `seed` and `repeat_of`; the claim of
point + seed keeps it from training twice). It costs one trial of n_trials, and one only where one still fits
(n_trials, and the time left when the study has a deadline). The fastest is picked because it costs least, and
its choice does not look at accuracies: a repeat of the best point would overstate the noise (the best of many
noisy draws is lucky, and its repeat falls back). dse.results.noise pools the estimate; the screen, the figures and report.html show it.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from dse.record import TrialRecord

IN_TIME_DRAWS = 32  # random points inside the budget to choose from when the study's time is short
REPEAT_ROOM = 1.5  # a seed-noise repeat starts only with this many times its first training's seconds left


@dataclass(frozen=True)
class SamplerConfig:
    """A `sampler` (dse/conf/sampler/<name>.yaml): its name and Optuna's keyword arguments for it."""

    name: str
    options: dict = field(default_factory=dict)  # e.g. n_startup_trials, multivariate (None: Optuna's default)

    @classmethod
    def of(cls, node: dict) -> "SamplerConfig":
        """From a sampler file's mapping ({name: tpe, n_startup_trials: 8, ...})."""
        return cls(node.get("name"), {k: v for k, v in node.items() if k != "name"})


class FeasibleStart(BaseSampler):
    """The first `n` feasible points at random from inside the space's budget, then `inner`."""

    def __init__(self, inner: BaseSampler, space, n: int | None, seed: int = 0, deadline: float | None = None,
                 repeat_after: int = 0, n_trials: int | None = None):
        self.inner, self.space, self.n, self.deadline = inner, space, n, deadline
        self.repeat_after, self.n_trials = repeat_after, n_trials  # the seed-noise repeat (module docstring)
        self.repeated = False  # set once the study holds its repeat: never looked for again
        self.rng = random.Random(seed)
        self.drawn: dict[int, dict] = {}  # trial number -> the space's values for it
        self.started = False  # set once `n` feasible trials exist: never counted again
        self.escape = False  # the last trial repeated a held point: the next one is drawn inside the budget

    def _starting(self, study) -> bool:
        """Do fewer than `n` feasible trials (finished, pruned or running) exist?"""
        if self.n is None:
            return True
        if self.started or self.n <= 0:
            return False
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False,
                                               states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED))
        from dse.trials.objective import rejected  # the one definition of 'not trained': rejected or duplicate

        feasible = sum(not rejected(t) for t in trials)
        self.started = feasible > self.n  # the current trial is RUNNING already
        return not self.started

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(study, trial)
        if trial.system_attrs.get("fixed_params"):
            return
        escape, self.escape = self.escape, False
        if self.deadline is not None and self._in_time(study, trial):
            return
        if not (escape or self._starting(study)):
            return
        from dse.errors import UserError

        try:
            self.drawn[trial.number] = self.space.sample_with_values(self.rng, feasible=True)[1]
        except UserError:  # no feasible point in the space's draws: leave it to the inner sampler
            self.n, self.started = 0, True

    def _in_time(self, study, trial) -> bool:
        """When the study's time is short, draw the point that best fits what is left
        (dse.trials.deadline.pick_in_time, among IN_TIME_DRAWS random points inside the budget); True when drawn."""
        from dse.trials import deadline
        from dse.cost import measures
        from dse.errors import UserError

        trials = study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        if not deadline.time_is_short(trials, self.deadline):
            return False
        try:
            drawn = [self.space.sample_with_values(self.rng, feasible=True) for _ in range(IN_TIME_DRAWS)]
        except UserError:
            return False
        # Points another trial holds (trained, refused, out of time, running) would only come back as repeats.
        held = {t.user_attrs.get("point_id") for t in study._storage.get_all_trials(study._study_id, deepcopy=False)}
        by = deadline.size_measure(trials)
        fresh = [(getattr(measures(p), by), v) for p, v in drawn if p.id not in held]
        values = deadline.pick_in_time(fresh, trials, self.deadline, by=by)
        if values is None:
            return False
        self.drawn[trial.number] = values
        return True

    def infer_relative_search_space(self, study, trial):
        if trial.number in self.drawn:
            return {}
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        if trial.number in self.drawn:
            return {}
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        values = self.drawn.get(trial.number) or {}
        param = self.space.params.get(param_name)
        if param is not None and values.get(param_name) is not None:
            value = param.label(values[param_name])
            try:
                if param_distribution._contains(param_distribution.to_internal_repr(value)):
                    return value
            except ValueError:  # not one of the distribution's choices: the inner sampler decides
                pass
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.drawn.pop(trial.number, None)
        self.escape = state == TrialState.FAIL and TrialRecord.from_trial(trial).status == "duplicate"
        self.inner.after_trial(study, trial, state, values)
        if self.repeat_after and not self.repeated and state == TrialState.COMPLETE \
                and TrialRecord.from_trial(trial).trained:
            self.repeat(study)

    def repeat(self, study) -> int | None:
        """Enqueue the seed-noise repeat when it is due (module docstring); the trial number it repeats, or None."""
        from dse.trials.objective import counted

        trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        records = [(t, TrialRecord.from_trial(t)) for t in trials]
        if any(r.repeat_of is not None or (r.seeds or 1) > 1 for _, r in records):
            self.repeated = True  # repeated once already (or trained with several seeds): the noise is measured
            return None
        trained = [(t, r) for t, r in records if r.trained and r.train_seconds is not None]
        if len(trained) < self.repeat_after:
            return None
        # the trial that called is trained but still RUNNING in the storage: it counts once it ends
        done = sum(counted(t) or (t.state == TrialState.RUNNING and r.trained) for t, r in records)
        if self.n_trials is not None and done >= self.n_trials:
            return None
        first, record = min(trained, key=lambda tr: (tr[1].train_seconds, tr[0].number))
        if self.deadline is not None and self.deadline - time.monotonic() < REPEAT_ROOM * record.train_seconds:
            return None
        study.enqueue_trial(first.params, user_attrs={"seed": int(record.seed or 0) + 1, "repeat_of": first.number})
        self.repeated = True
        return first.number

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self.rng = random.Random()


def auto(study) -> str:
    """The sampler `sampler=auto` picks: grid for ablation grids, GP for small budgets, TPE for large ones.

    Optuna's GPSampler refits its Gaussian processes on every trial (cubic in the trials), so it pays off
    where trials are dear and few; TPE scales to thousands of trials and many workers.
    """
    if study.is_grid:
        return "grid"
    return "gp" if study.n_trials <= AUTO_GP_TRIALS else "tpe"


AUTO_GP_TRIALS = 200


def startup_count(sampler: SamplerConfig) -> int | None:
    """How many start-up trials a sampler draws at random (None: all of them, random search)."""
    if sampler.name == "random":
        return None
    if sampler.name == "nsga2":
        return int(sampler.options.get("population_size") or 50)
    return int(sampler.options.get("n_startup_trials") or 10)
