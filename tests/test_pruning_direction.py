"""The single-objective pruner watches the study's own objective (issue 11: an `error` study was fed accuracy).

Each test makes the pruner fire for real: the study holds one finished trial whose intermediate values sit at
accuracy 0.2 (error 0.8) at every epoch, and a MedianPruner with one start-up trial compares a real fit against
it. A net that learns (constant lr 0.1: val accuracy 0.25, 0.43, 0.62 on the synthetic data) must survive in
both directions and report the study's own objective; a net that cannot learn (lr 1e-7: chance accuracy
0.115) must be pruned in both. Before the fix, the `error` study was fed accuracy 0.115 < 0.8 and kept the
bad net.
"""
import optuna
import pytest
import torch

from dse.train import datasets

from dse.train import fit as train
from dse.trials import pruning
from dse.point import Point, Stage, Stem

torch.set_num_threads(1)
POINT = Point(stages=(Stage("basic", 1, 8), Stage("basic", 1, 16, stride=2)), stem=Stem(width=8),
              image_size=16, in_chans=1)
EPOCHS = 3


@pytest.fixture(scope="module")
def data():
    return datasets.load("synthetic", subset=1024, val_subset=256)


def study_at_half(direction: str):
    """An in-memory study with one finished trial at accuracy 0.2 (error 0.8) every epoch, and a median pruner."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(direction=direction, pruner=pruner)
    level = 0.8 if direction == "minimize" else 0.2
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=level,
                                              intermediate_values={e: level for e in range(EPOCHS)}))
    return study


def fit(study, data, lr):
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    recipe = train.recipe({"max_epochs": EPOCHS, "batch_size": 64, "lr": lr, "threads": 1, "seed": 0,
                           "schedule": "constant"})
    return train.fit(POINT, data, recipe, callbacks=[pruning.callback(trial)], progress=False), trial


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_a_net_that_learns_is_not_pruned(data, direction):
    result, trial = fit(study_at_half(direction), data, lr=0.1)
    assert result.status == "ok", result.reason
    assert result.val_acc > 0.4
    reported = list(trial.storage.get_trial(trial._trial_id).intermediate_values.values())
    expected = 1 - result.val_acc if direction == "minimize" else result.val_acc
    assert reported[-1] == pytest.approx(expected, abs=1e-6)  # error for a minimizing study, else accuracy


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_a_net_that_cannot_learn_is_pruned(data, direction):
    result, _ = fit(study_at_half(direction), data, lr=1e-7)
    assert result.status == "pruned"
    assert result.val_acc < 0.4
