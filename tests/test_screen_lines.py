"""Issue 21: lines that tell the truth. The sizing line states the optimizer steps a trial really takes
(trainer.limit_batches included) and a trial time and count consistent with its own measured rate; the
study line says which counts are the whole study's and which this run's. The sizing is measured for real
(a typical point of spaces/resnext.yaml on synthetic data, a few seconds); the trials for the screen are real
Optuna FrozenTrials."""
from __future__ import annotations

import re

import optuna
import pytest

from dse.trials import sizing
from dse.trials.screen import Screen

LINE = re.compile(r"(\d+) training samples x (\d+) epochs? at batch (\d+) \((\d+) steps.*?about (\d+) s per "
                  r"trial at that rate, so about (\d+) trials in (\d+) s")


@pytest.fixture(scope="module")
def setup():
    """(space, data, recipe at smoke size) as dse.search makes them for fidelity=smoke data=synthetic."""
    from dse.space.parse import load
    from dse.train import datasets
    from dse.train.recipe import recipe

    data = datasets.load("synthetic", seed=0)
    space = load("resnext").with_geometry(image_size=data.image_size, in_chans=data.in_chans,
                                          num_classes=data.num_classes)
    return space, data, recipe({"max_epochs": 1, "batch_size": 16, "limit_batches": 4, "threads": 1})


def test_sizing_line_counts_the_steps_limit_batches_allows(setup):
    """Smoke printed 'batch 16 (32 steps)' where 4 steps ran (limit_batches=4)."""
    space, data, recipe = setup
    size, val, batch, why = sizing.choose(space, data, recipe, (1.0, 4), 540.0, 8)
    found = LINE.search(why)
    assert found, why
    samples, epochs, shown_batch, steps = (int(x) for x in found.groups()[:4])
    assert (samples, epochs, shown_batch) == (size, 1, batch) and size // batch > 4  # more batches than the limit
    assert steps == 4, why  # one epoch, at most 4 batches
    assert "at most 4 batches per epoch" in why


def test_sizing_line_trial_count_follows_its_own_rate(setup):
    """A short timeout cannot fit the asked 8 trials at the smallest size: the line says how many fit."""
    space, data, recipe = setup
    *_, why = sizing.choose(space, data, recipe, (1.0, 4), 30.0, 8)
    found = LINE.search(why)
    assert found, why
    seconds, fits, timeout = (int(x) for x in found.groups()[4:])
    assert timeout == 30 and seconds >= sizing.OVERHEAD_S - 1
    assert fits < 8 and "fewer than the 8 asked" in why
    # the count is what the stated trial time allows in the timeout, less the run's reserve
    assert fits == pytest.approx((timeout - sizing.RESERVE_S) / max(seconds, 1), abs=1.5)


def test_trial_seconds_counts_limited_steps_and_validation():
    """By hand: 512 samples at batch 16 is 32 steps, 4 with limit 4 (64 samples); validation 200 (< 4 x 256)."""
    full = sizing.trial_seconds(512, 200, 16, 2, None, 0.01, 0.001)
    assert full == pytest.approx(sizing.OVERHEAD_S + 2 * (512 * 0.01 + 200 * 0.001))
    limited = sizing.trial_seconds(512, 200, 16, 2, 4, 0.01, 0.001)
    assert limited == pytest.approx(sizing.OVERHEAD_S + 2 * (64 * 0.01 + 200 * 0.001))


def trial(number: int, **attrs):
    """A finished FrozenTrial with these user attributes."""
    t = optuna.trial.create_trial(value=0.5, user_attrs=attrs)
    t.number = number
    return t


def test_study_line_says_which_counts_are_this_runs():
    before = [trial(0, status="ok", val_acc=0.8), trial(1, status="ok", val_acc=0.7), trial(2, status="rejected")]
    screen = Screen(before, None)
    assert "study: 2 trained, 1 rejected (this run: none yet)" in screen.study_line()
    screen.add(trial(3, status="ok", val_acc=0.9))
    assert "study: 3 trained, 1 rejected (this run: 1 trained)" in screen.study_line()
    fresh = Screen([], None)
    fresh.add(trial(0, status="duplicate"))
    assert "study: 0 trained, 1 repeat (all in this run)" in fresh.study_line()
