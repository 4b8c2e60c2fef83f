"""dse.trials.sampling.FeasibleStart: start-up trials inside the budget, and the escape from repeated proposals.

The studies here are real Optuna studies driven by dse's own trial function (`dse.trials.objective.Objective`);
only its `train` is replaced by a constant result, so no network is trained.
"""
from __future__ import annotations

import types

import optuna
from optuna.samplers import BaseSampler

from dse.trials import objective as obj
from dse import study as studies
from dse.trials.sampling import FeasibleStart
from dse.space import load
from dse.train.fit import TrainResult


class Stubborn(BaseSampler):
    """A sampler that proposes one fixed point forever: what TPE or GP do once the only thing they see after a
    repeat is a FAIL trial that teaches their model nothing."""

    def __init__(self, values: dict):
        self.values = values

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.values[param_name]


def _study(sampler, space, n: int):
    """A study of `n` proposals; (the study, the ids of the points trained)."""
    trained = []

    class Constant(obj.Objective):
        def train(self, trial, point, seed, params, flops, *args, **kwargs):
            trained.append(point.id)
            return TrainResult(0.5, None, 1, 0.0, "ok", "", history=[{"epoch": 1, "val/acc": 0.5, "seconds": 0.0}])

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.set_user_attr("objectives", ["accuracy", "flops"])
    spec = studies.from_dict({"name": "t", "objectives": ["accuracy", "flops"],
                              "constraints": dict(space.constraints)})  # the space's budget
    data = types.SimpleNamespace(image_size=space.geometry["image_size"], in_chans=space.geometry["in_chans"],
                                 num_classes=space.geometry["num_classes"])
    loggers = types.SimpleNamespace(trial=lambda *a, **k: None, trial_done=lambda *a, **k: None)
    objective = Constant(study=spec, space=space, cells=None, data=data, recipe=types.SimpleNamespace(seed=0),
                         loggers=loggers, progress=False)
    study.optimize(objective, n_trials=n, catch=(obj.TrialFailed,))
    return study, trained


def _statuses(sampler, space, n: int) -> list:
    """Each trial's dse status ('ok', 'rejected', 'duplicate', ...), in order."""
    return [t.user_attrs.get("status") for t in _study(sampler, space, n)[0].trials]


def _run(sampler, space, n: int) -> tuple[int, int]:
    """(trained, duplicate) trial counts after `n` proposals."""
    study, trained = _study(sampler, space, n)
    duplicates = sum(t.user_attrs.get("status") == "duplicate" for t in study.trials)
    assert len(set(trained)) == len(trained)  # dse never trains a held point twice
    return len(trained), duplicates


def _fixed_values(space) -> dict:
    """The Optuna parameter values of one feasible point of `space`."""
    values = space.sample_with_values(3, feasible=True)[1]
    return {name: space.params[name].label(v) for name, v in values.items() if name in space.params}


def test_a_repeated_proposal_is_followed_by_a_random_point_inside_the_budget():
    space = load("resnext")
    stubborn = Stubborn(_fixed_values(space))
    # Without the escape the stubborn sampler trains its point once and repeats it for every other proposal.
    assert _run(stubborn, space, 12) == (1, 11)
    # Wrapped (start-up already over: n=0), every repeat hands the next proposal to a feasible random draw.
    trained, duplicates = _run(FeasibleStart(stubborn, space, n=0, seed=0), space, 12)
    assert trained >= 6 and duplicates <= 6, (trained, duplicates)


def test_start_up_trials_are_drawn_inside_the_budget():
    space = load("resnext").with_constraints(flops={"max": 1e7})  # the default study's budget: a few percent
    blind = _statuses(optuna.samplers.RandomSampler(seed=0), space, 8)
    assert blind.count("rejected") >= 4, blind  # blind random draws are mostly over budget
    started = _statuses(FeasibleStart(optuna.samplers.RandomSampler(seed=0), space, n=5, seed=0), space, 5)
    assert started == ["ok"] * 5, started


def test_a_study_file_that_names_no_sampler_gets_auto(tmp_path):
    """The default sampler is auto (gp up to 200 trials, tpe beyond), as the default study's: tpe before."""
    import yaml

    from dse.search import compose, prepare

    assert studies.from_dict({"name": "x"}).sampler == "auto"
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump({"name": "plain", "space": "resnext", "n_trials": 20}))
    small = prepare(compose([f"study={path}", "data=synthetic", "fidelity=smoke"]))
    assert small.sampler.name == "gp"
    large = prepare(compose([f"study={path}", "data=synthetic", "fidelity=smoke", "study.n_trials=500"]))
    assert large.sampler.name == "tpe"


def test_pruned_trials_count_towards_the_start_up():
    """A trial a pruner stopped was trained at a feasible point: it ends the start-up like a finished one. (Before,
    only COMPLETE and RUNNING trials counted, so under a pruner that stops most trials the random start-up
    draws never ended and TPE or NSGA-II never took over.)"""
    space = load("resnext").with_constraints(flops={"max": 1e7})
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(3):  # three points trained for some epochs, then pruned (dominance, or a moasha rung)
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                                  user_attrs={"status": "pruned"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              user_attrs={"status": "rejected"}))  # never trained: not counted
    study.ask()  # the trial being sampled is RUNNING, as in optimize()
    assert not FeasibleStart(optuna.samplers.RandomSampler(seed=0), space, n=3)._starting(study)
    assert FeasibleStart(optuna.samplers.RandomSampler(seed=0), space, n=4)._starting(study)
