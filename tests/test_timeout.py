"""A study that keeps its timeout (issue 13): the trial in flight stops and is queued again instead of
overrunning, and trials are sized to the machine's measured speed.

Before: Optuna checked study.timeout only between trials, so `study.timeout=60` ran 240 s; the default
study trained one point in nine minutes on a busy machine.
"""
from __future__ import annotations

import dataclasses
import time

import optuna
import pytest

from dse.trials import sizing
from search_helpers import load_study, ok, search_here

pytestmark = pytest.mark.filterwarnings("ignore")
LONG = ["space=resnext", "trainer.max_epochs=3000", "trainer.limit_batches=4"]  # thousands of steps


def test_the_trial_in_flight_stops_at_the_timeout_and_runs_on_resume(tmp_path):
    import lightning.pytorch  # noqa: F401  imported before the clock starts: a cold import (60 s on a loaded
    import timm  # noqa: F401  machine when this test ran first in its process) is not the study's overrun
    start = time.monotonic()
    proc = search_here(*LONG, "study.n_trials=1", "study.timeout=20", "study.name=t", cwd=tmp_path)
    took = time.monotonic() - start
    assert took < 20 + 15, f"ran {took:.0f}s for a 20 s timeout"
    assert proc.returncode == 1 and "stopped at the timeout and queued again" in proc.stderr
    trials = load_study(tmp_path / "runs/t", "t").trials
    stopped = [t for t in trials if t.state.name == "FAIL"]
    queued = [t for t in trials if t.state.name == "WAITING"]
    assert len(stopped) == 1 and stopped[0].user_attrs["reason"] == "out of time"
    assert f"trial {stopped[0].number} [out of time] needs ~" in proc.stdout, proc.stdout[-2000:]  # on screen too
    assert len(queued) == 1 and queued[0].params == stopped[0].params  # the same point, queued again
    assert not [t for t in trials if t.state.name == "RUNNING"]
    ok(search_here("space=resnext", "trainer.max_epochs=3000", "trainer.limit_batches=4", "study.n_trials=1",
                   "study.name=t", "trainer.max_epochs=2", "study.allow_changes=true", cwd=tmp_path))
    done = [t for t in load_study(tmp_path / "runs/t", "t").trials if t.user_attrs.get("status") == "ok"]
    assert len(done) == 1 and done[0].params == stopped[0].params  # the resumed run trained it first


def test_subset_for_a_hand_computed_budget():
    # 2 ms per sample, 60 s per trial, 2 epochs, 1,000 validation samples:
    # 60 - 4 overhead - 2 * 1000 * 0.002 / 3 = 54.67 s of training -> 54.67 / (2 * 0.002) = 13,666 -> 13,500
    assert sizing.subset_for(0.002, 60.0, 2, 1000, 20000) == 13500
    assert sizing.subset_for(0.002, 600.0, 2, 1000, 20000) == 20000  # never above the configured size
    assert sizing.subset_for(0.5, 60.0, 2, 1000, 20000) == 1000  # a floor, however slow the machine


def test_validation_time_is_measured_not_guessed():
    # Before, validation was guessed at a third of a training sample's time: on a busy 2-core machine
    # (9.5 ms per training sample, 6,000 validation samples, 65.6 s per trial) that guess left 65.6 - 4 - 38 s
    # for training and cut the set to 1,500 images, while validation really took ~1 s per epoch.
    # Measured at 1 ms per validation sample: 65.6 - 4 - 2 * 6000 * 0.001 = 49.6 s -> 49.6 / (2 * 0.0095) = 2610
    assert sizing.subset_for(0.0095, 65.6, 2, 6000, 20000, eval_per_sample=0.001) == 2500
    assert sizing.subset_for(0.0095, 65.6, 2, 6000, 20000) == 1000  # the old guess: 23.6 s -> 1242 -> floor


def test_validation_shrinks_with_a_small_training_set():
    assert sizing.val_for(8500, 6000) == 6000  # a quiet machine keeps the whole validation split
    assert sizing.val_for(1500, 6000) == 2000  # never below the floor
    assert sizing.val_for(3000, 6000) == 3000 and sizing.val_for(1500, 1200) == 1200


def test_small_trials_keep_enough_optimizer_steps():
    # 8,500 images x 2 epochs at batch 128 = 132 steps: enough, the recipe's batch stays
    assert sizing.batch_for(8500, 2, 128) == 128
    # 1,500 x 2 = 3,000 samples: 23 steps at 128; 3,000 / 100 steps = 30 per batch -> the power of two below, 16
    assert sizing.batch_for(1500, 2, 128) == 16
    assert sizing.batch_for(1000, 1, 128) == 16  # 10 per batch would be needed: never below 16
    assert sizing.batch_for(100, 1, 8) == 8  # nor above the recipe's own batch
    assert sizing.batch_for(5000, 2, 64) == 64  # 156 steps


def test_one_validation_sample_costs_less_than_one_training_sample():
    from dse.train.datasets import load
    from dse.space import load as load_space
    from dse.train.fit import Recipe

    data = load("synthetic")
    point = sizing.typical_point(load_space("resnext").with_constraints(flops={"max": 1e7}))
    train, val = sizing.seconds_per_sample(point.thinned(0.25, 4), data, Recipe(batch_size=32, threads=1))
    assert 0 < val < train  # forward only, no gradients, against forward + backward + step


def test_a_fresh_study_is_sized_once_and_a_resume_reuses_the_size(tmp_path):
    # 20 trials of one epoch asked of 100 s: the sizing cuts the set to its floor (1,000 images, batch 16), so each of
    # the two trials is the least a sized trial trains (4 trials of 2 epochs: ~20 s each), and the run's deadline
    # stays 90 s away
    epochs = 1
    args = ["space=resnext", "study.n_trials=1", "study.timeout=100", "study.trials_per_timeout=20",
            "study.name=z", "trainer.threads=1", f"trainer.max_epochs={epochs}"]
    first = ok(search_here(*args, cwd=tmp_path, fast=False))  # Fashion-MNIST at its proxy size (20k)
    assert "ms per training sample measured" in first.stdout
    study = load_study(tmp_path / "runs/z", "z")
    size = study.user_attrs["dse:settings"]["data"]["subset"]
    assert 1000 <= size <= 20000
    assert study.trials[0].user_attrs["settings"]["data"]["subset"] == size
    batch = study.user_attrs["dse:settings"]["trainer"]["batch_size"]
    assert f"at batch {batch} (" in first.stdout and study.trials[0].user_attrs["settings"]["trainer"]["batch_size"] == batch
    assert size * epochs // batch >= sizing.MIN_STEPS or batch == sizing.MIN_BATCH
    val = study.user_attrs["dse:settings"]["data"]["val_subset"]  # 100 s for 20 trials: a small set, cut
    assert sizing.VAL_FLOOR <= val <= max(size, sizing.VAL_FLOOR) and val < 6000
    assert f"{val} validation samples" in first.stdout
    assert study.trials[0].user_attrs["settings"]["data"]["val_subset"] == val
    again = ok(search_here(*args[:1], "study.n_trials=2", *args[2:], cwd=tmp_path, fast=False))
    assert f"sizing: {size} training samples, as this study was sized when it began" in again.stdout
    assert "per training sample measured" not in again.stdout  # not measured again
    trained = [t for t in load_study(tmp_path / "runs/z", "z").trials if t.user_attrs.get("status") == "ok"]
    assert len(trained) == 2 and {t.user_attrs["settings"]["data"]["subset"] for t in trained} == {size}


def _points(n: int, args: list[str]) -> list[tuple[dict, str]]:
    """`n` distinct points inside the study's budget as (Optuna params, point id), drawn as dse.search would
    propose them (same space, geometry and budget)."""
    from dse.trials import objective as obj
    from dse import search
    from search_helpers import FAST

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    job = search.prepare(search.compose(FAST + args))
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    found: dict[str, dict] = {}
    while len(found) < n:
        trial = scratch.ask()
        point = obj.with_geometry(job.space.suggest(trial), job.data)
        if not any(v > 0 for v in job.space.violations(point).values()):
            found.setdefault(point.id, trial.params)
    return [(params, pid) for pid, params in found.items()]


def test_a_trial_out_of_time_lets_cheaper_ones_run_and_waits_for_the_next_run(tmp_path, monkeypatch):
    # Before: the out-of-time trial stopped the whole study (a busy default run ended 4 minutes early). Now the
    # study goes on while the time left exceeds its shortest trained trial; the stopped point is not tried
    # again in this run and is queued (WAITING) only when the run ends, for the next run to train first.
    from dse.train import fit as train
    from dse.trials import runner
    timeout = 30  # the run waits out its timeout; 20 s before the deadline fit the cheap trial, the stopped one and more
    args = ["space=resnext", "study.name=o", f"study.timeout={timeout}", "study.n_trials=100"]
    (cheap, _), (slow, slow_id) = _points(2, args)
    storage = f"sqlite:///{tmp_path / 'runs/o/study.db'}"
    (tmp_path / "runs/o").mkdir(parents=True)
    made = optuna.create_study(study_name="o", storage=storage, directions=["maximize", "minimize"])
    for params in (cheap, slow, slow):  # trained; out of time; proposed again in the same run
        made.enqueue_trial(params)
    fit = train.fit

    def fit_slow_point(point, data, recipe, **kw):  # the slow point: 100,000 epochs, out of time at once
        if point.id == slow_id:
            recipe = dataclasses.replace(recipe, epochs=100_000)
        return fit(point, data, recipe, **kw)

    monkeypatch.setattr(train, "fit", fit_slow_point)
    start = time.monotonic()
    proc = ok(search_here(*args, cwd=tmp_path))
    took = time.monotonic() - start
    trials = load_study(tmp_path / "runs/o", "o").trials
    trained = [t for t in trials if t.user_attrs.get("status") == "ok"]
    stopped = [t for t in trials if t.user_attrs.get("reason") == "out of time"]
    assert [t.number for t in stopped] == [1] and stopped[0].state.name == "FAIL", proc.stdout[-3000:]
    assert "trial 1 [out of time] needs ~" in proc.stdout and "going on: " in proc.stdout, proc.stdout[-3000:]
    again = trials[2]  # the same point, proposed again in this run: not trained
    assert again.user_attrs["status"] == "duplicate" and again.user_attrs["duplicate_of"] == 1
    assert trained[0].number == 0 and len([t for t in trained if t.number > 1]) >= 1, proc.stdout[-3000:]
    assert slow_id not in {t.user_attrs.get("point_id") for t in trained}
    waiting = [t for t in trials if t.state.name == "WAITING"]
    assert len(waiting) == 1 and waiting[0].params == slow, proc.stdout[-3000:]
    assert waiting[0].number == max(t.number for t in trials)  # queued when the run ended
    shortest = min(t.user_attrs["train_seconds"] for t in trained)
    assert timeout - runner.RESERVE_S - shortest - 3 <= took <= timeout + 15, (took, shortest, proc.stdout[-3000:])


def _trained(flops_mf: list[float], seconds_of) -> list:
    """Trained trials (status ok) at these MFLOPs, each taking seconds_of(MFLOPs) to train."""
    return [optuna.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.8, f * 1e6],
                                user_attrs={"status": "ok", "flops": int(f * 1e6), "train_seconds": seconds_of(f)})
            for f in flops_mf]


def test_training_time_is_predicted_from_the_trained_trials_flops():
    from dse.trials import deadline
    trials = _trained([2, 5, 8], lambda f: 20 + 8 * f)  # 36, 60, 84 s
    rejected = optuna.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.0, 9e6],
                                   user_attrs={"status": "rejected", "flops": 9_000_000})
    predict = deadline.predictor(trials + [rejected])  # a line: 20 s + 8 s per MFLOP
    assert abs(predict(10e6) - 100) < 1e-6 and abs(predict(3.5e6) - 48) < 1e-6
    assert abs(predict(1e6) - 36) < 1e-6  # below the cheapest trained point: never faster than it
    one = deadline.predictor(trials[:1])  # one trained trial: proportional to its FLOPs, above it
    assert abs(one(4e6) - 72) < 1e-6 and abs(one(1e6) - 36) < 1e-6
    assert deadline.predictor([rejected]) is None
    # time is short below 2 x the longest trial (84 s). 60 s left: fill 0.8 x 60 = 48 s with one trial, the
    # longest predicted that fits (b, 44 s); 100 s left: 80 s fits two of the fastest (36 s), 40 s each (e)
    candidates = [(2e6, "a"), (3e6, "b"), (4e6, "c"), (9e6, "d"), (2.5e6, "e")]
    assert deadline.pick_in_time(candidates, trials, deadline=1060.0, now=1000.0) == "b"
    assert deadline.pick_in_time(candidates, trials, deadline=1100.0, now=1000.0) == "e"
    assert deadline.pick_in_time(candidates, trials, deadline=1200.0, now=1000.0) is None  # 200 s: not short
    assert deadline.pick_in_time([(9e6, "d")], trials, deadline=1060.0, now=1000.0) is None  # nothing fits


def test_when_time_is_short_the_next_point_is_drawn_to_fit_it():
    # Before: the sampler knew nothing of time. A busy default run (results/default/busy_one_core.log) trained
    # 6 points by 6:43 of 9:00, then spent its last two minutes on six proposals that each ran out of time
    # and ended 44 s before its timeout.
    from dse.cost import complexity
    from dse.trials.sampling import FeasibleStart
    from dse.space import load as load_space

    space = load_space("resnext").with_geometry(image_size=28, in_chans=1, num_classes=10)
    space = space.with_constraints(flops={"max": 1e7})

    def propose(left: float):
        sampler = FeasibleStart(optuna.samplers.RandomSampler(seed=0), space, 0, seed=0,
                                deadline=time.monotonic() + left)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for t in _trained([2, 5, 8], lambda f: 20 + 8 * f):  # 36, 60, 84 s to train
            study.add_trial(t)
        trial = study.ask()
        return space.suggest(trial), trial.number in sampler.drawn

    point, drawn = propose(60.0)  # short: under 2 x 84 s; fits 0.8 x 60 = 48 s -> at most 3.5 MFLOPs
    assert drawn and 1.5e6 <= complexity(point).flops <= 3.5e6, complexity(point).flops
    _, drawn = propose(1000.0)  # plenty of time: the inner sampler proposes
    assert not drawn


# The six points trained by the busy default run of results/default/busy_one_core.log: (FLOPs, activations,
# training seconds). Point 16 is deeper: fewer FLOPs than point 4 but more activations, and it took 87 s.
BUSY_RUN = [(5683712, 172490, 59.5), (8394496, 224234, 100.2), (3162368, 136426, 52.7),
            (7264256, 268138, 101.5), (3501056, 136426, 50.7), (2550848, 208162, 86.8)]


def _measured(rows) -> list:
    return [optuna.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.8, float(f)],
                                user_attrs={"status": "ok", "flops": f, "acts": a, "train_seconds": s})
            for f, a, s in rows]


def test_training_time_is_predicted_from_activations_when_trials_recorded_them():
    # Before: a line in FLOPs predicted the deeper point (2.55 MFLOPs) at 45 s from the other five; it took 87 s.
    from dse.trials import deadline
    *others, deep = BUSY_RUN
    trials = _measured(others)
    assert deadline.size_measure(trials) == "acts"
    assert deadline.size_measure(_trained([2, 5], lambda f: 10 * f)) == "flops"  # older trials: no activations
    by_acts, by_flops = deadline.predictor(trials, "acts"), deadline.predictor(trials, "flops")
    assert abs(by_acts(deep[1]) - deep[2]) < 10 < 30 < abs(by_flops(deep[0]) - deep[2])


def test_when_time_is_short_points_other_trials_hold_are_not_drawn():
    # Before: the busy default run drew the same trained point five times in a row once time was short, and
    # each came back as a repeat (results/default/busy_one_core.log, trials 6-15).
    from dse.trials.sampling import FeasibleStart
    from dse.space import load as load_space

    space = load_space("resnext").with_geometry(image_size=28, in_chans=1, num_classes=10)
    space = space.with_constraints(flops={"max": 1e7})

    def propose(held: list[str]):
        sampler = FeasibleStart(optuna.samplers.RandomSampler(seed=0), space, 0, seed=0,
                                deadline=time.monotonic() + 90.0)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for t in _measured(BUSY_RUN):
            study.add_trial(t)
        for point_id in held:
            study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.7, 1e6],
                                                user_attrs={"status": "rejected", "point_id": point_id}))
        trial = study.ask()
        assert trial.number in sampler.drawn  # time is short: the in-time draw chose the point
        return space.suggest(trial).id

    first = propose([])
    second = propose([first])  # the same seeded draws, with the first choice now held by a trial
    assert second != first


def _stopped_out_of_time(trial):
    """A trial function that runs out of time at once (what dse.trials.deadline raises inside a fit)."""
    from dse.trials.deadline import OutOfTime

    trial.suggest_int("x", 0, 1000)
    raise OutOfTime("needs ~300s more, 10s left before the timeout")


def _run(study, n: int) -> None:
    """n trials of `_stopped_out_of_time`, guarded and caught as dse.trials.runner does, then the re-queue."""
    from dse.trials import signals

    study.optimize(signals.guard(_stopped_out_of_time), n_trials=n, catch=(signals.TrialOutOfTime,))
    signals.requeue()


def test_stopped_trials_never_crowd_out_new_points(tmp_path):
    # Issue 21: a busy run stopped 7 trials out of time and queued all 7, so the next run trained them before
    # any new point. Now one per run is queued; the others fail for good and say why. (A real SQLite study;
    # the trial function raises the deadline's OutOfTime itself instead of timing a fit.)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    _run(study, 3)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == study.trials[0].params
    for t in study.trials[1:3]:
        assert t.user_attrs["status"] == "failed"
        assert "not queued" in t.user_attrs["reason"] and "crowd out new points" in t.user_attrs["reason"]


def test_a_trial_is_queued_again_at_most_once(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    _run(study, 1)
    _run(study, 1)  # the next run pops the queued copy first; it runs out of time again
    trials = study.trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"] and trials[1].params == trials[0].params
    assert trials[1].user_attrs["status"] == "failed"  # failed for good: counted, never queued again
    assert trials[1].user_attrs["reason"] == ("out of time: again (queued once already, from trial 0); not queued "
                                              "a second time")


def test_a_burst_of_load_in_the_first_steps_does_not_stop_a_trial_that_fits():
    # A real smoke fit; a callback sleeps 2 s in steps 4 and 5, standing in for another process taking the core
    # (load cannot be made on cue here). Before, the pace was the mean since the warm-up, judged from step 5:
    # ~2 s/step x 27 steps left > 25 s, so the trial stopped out of time; its steady pace fits many times over.
    import lightning.pytorch as pl
    import torch

    from dse.point import Point, Stage, Stem
    from dse.train import datasets
    from dse.train import fit as train
    from dse.trials import deadline

    class Burst(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step in (4, 5):
                time.sleep(2.0)

    torch.set_num_threads(1)
    point = Point(stages=(Stage("basic", 1, 8),), stem=Stem(width=8), image_size=16, in_chans=1)
    data = datasets.load("synthetic", subset=1024, val_subset=128)
    recipe = train.recipe({"max_epochs": 2, "batch_size": 64, "lr": 0.05, "threads": 1})
    start = time.monotonic()
    result = train.fit(point, data, recipe, progress=False,
                       callbacks=[Burst(), deadline.callback(time.monotonic() + 25.0)])
    assert result.status == "ok" and result.epochs == 2
    assert time.monotonic() - start < 25.0  # it did fit: the deadline was not passed
