"""What ranks a moasha rung. By default (rung_score train_loss) minus the epoch's mean training loss, under any
schedule, with no branch. With rung_score val_acc under the wsd schedule, a discarded decay branch
(dse.train.rungs): the score the rung records is the branch's, the branch leaves no trace on the main run (its
final weights and history are a plain fit's, and the checkpoint written at a pause resumes to the plain fit's
weights), and under one-cycle the rung keeps its in-place val/acc. Real Lightning fits (3 epochs of 8 steps) on a
real SQLite study."""
from __future__ import annotations

import math

import optuna
import pytest
import torch
from torch import nn

from dse.train.recipe import Recipe
from dse.trials import moasha

EPOCHS, STEPS_PER_EPOCH, ETA = 3, 8, 2  # 256 training samples at batch 32
LR = 0.02  # at 0.1 this net collapses to one class on 256 images: every score would be 0.047
LADDER = moasha.rungs(EPOCHS, 1, ETA)  # [1, 2]


@pytest.fixture(scope="module")
def data():
    from dse.train import datasets
    return datasets.load("fashion_mnist", subset=256, val_subset=128, augment=False, seed=0)


def recipe(schedule: str) -> Recipe:
    return Recipe(epochs=EPOCHS, batch_size=32, lr=LR, schedule=schedule, threads=1, seed=3, accelerator="cpu")


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(8 * 7 * 7, 10))


def plain(data, schedule: str, callbacks=()):
    from dse.train.fit import fit
    net = tiny_net()
    result = fit(net, data, recipe(schedule), callbacks=callbacks, progress=False)
    assert result.status == "ok"
    return net, result


def moasha_fit(data, tmp_path, schedule: str, rivals_at, score: str = "val_acc", extra=()):
    """A piece of a real moasha chain: two dominated rival chains (score -1e6, below any accuracy or minus loss)
    recorded at the rungs `rivals_at` (so the piece goes on there: it is the top 1 of 3) and none elsewhere
    (alone at a rung, it pauses: floor(1/2) = 0)."""
    from dse.train.fit import fit
    from dse.trials.pruning import MoashaCallback
    tmp_path.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="b",
                                directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "flops"])
    for _ in range(2):
        study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.0, 1e12],
                                            user_attrs={"flops": 10**12},
                                            system_attrs={f"dse:rung:{r}": -1e6 for r in rivals_at}))
    trial = study.ask()
    trial.set_user_attr("flops", 1000)
    cb = MoashaCallback(trial, LADDER, ETA, trial.number, lambda epoch: tmp_path / f"rung-{epoch}.ckpt",
                        score=score)
    net = tiny_net()
    result = fit(net, data, recipe(schedule), callbacks=(cb, *extra), progress=False)
    frozen = study._storage.get_trial(trial._trial_id)
    return net, result, frozen, cb


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def curve(result) -> list:
    return [(h["epoch"], h["val/acc"], h["val/loss"], h["train/loss"]) for h in result.history]


def test_wsd_rungs_score_on_a_branch_that_leaves_no_trace(data, tmp_path):
    from dse.train.fit import fit
    from dse.train.rungs import RungScores
    base_net, base = plain(data, "wsd")
    scores = RungScores([r / EPOCHS for r in LADDER], decay=0.2, seed=recipe("wsd").seed)
    plain(data, "wsd", (scores,))

    net, result, trial, cb = moasha_fit(data, tmp_path / "on", "wsd", rivals_at=LADDER)
    assert result.status == "ok" and cb.paused is None
    recorded = {r: trial.system_attrs[f"dse:rung:{r}"] for r in LADDER}
    # the rung records RungScores' branch score of the same state (rungs at 1/3 and 2/3 of the steps)
    assert [recorded[r] for r in LADDER] == [rec["acc"] for rec in scores.records]
    branches = trial.user_attrs["rung_branches"]
    # hand count: rung r ends at step 8r; its branch is ceil(0.2 x 8r) steps (wsd decays from step 19 of 24)
    assert [branches[str(r)]["steps"] for r in LADDER] == [math.ceil(0.2 * STEPS_PER_EPOCH * r) for r in LADDER]
    assert all(branches[str(r)]["cpu_seconds"] > 0 for r in LADDER)
    in_place = {h["epoch"]: h["val/acc"] for h in result.history}
    assert [branches[str(r)]["in_place"] for r in LADDER] == [in_place[r] for r in LADDER]
    assert any(recorded[r] != in_place[r] for r in LADDER)  # the branch, not the in-place val/acc, ranks
    val_loss = {h["epoch"]: h["val/loss"] for h in result.history}
    assert all(branches[str(r)]["loss"] != pytest.approx(val_loss[r], abs=1e-4) for r in LADDER)
    # no trace on the main run: the same weights and history as a plain fit with the same seed
    assert same_weights(net, base_net)
    assert curve(result) == curve(base)

    # a piece that pauses (alone at rung 2) writes the main run's state: resumed, it ends as the plain fit
    _, paused, trial, cb = moasha_fit(data, tmp_path / "pause", "wsd", rivals_at=[1])
    assert paused.status == "paused" and cb.paused[0] == 2
    assert trial.system_attrs["dse:rung:2"] == scores.records[1]["acc"]
    resumed_net = tiny_net()
    resumed = fit(resumed_net, data, recipe("wsd"), progress=False, resume=cb.paused[1])
    assert resumed.status == "ok"
    assert same_weights(resumed_net, base_net)
    assert curve(resumed) == curve(base)


def test_one_cycle_rungs_keep_the_in_place_score(data, tmp_path):
    base_net, base = plain(data, "onecycle")
    net, result, trial, cb = moasha_fit(data, tmp_path, "onecycle", rivals_at=LADDER)
    assert result.status == "ok"
    in_place = {h["epoch"]: h["val/acc"] for h in result.history}
    assert {r: trial.system_attrs[f"dse:rung:{r}"] for r in LADDER} == {r: in_place[r] for r in LADDER}
    assert "rung_branches" not in trial.user_attrs and cb.branches == {}
    assert same_weights(net, base_net)
    assert curve(result) == curve(base)


class StepLosses:
    """Lightning callback: every training step's loss as training_step returned it, per epoch (1-based)."""

    def __init__(self):
        import lightning.pytorch as pl

        self.by_epoch: dict[int, list[float]] = {}
        owner = self

        class Hook(pl.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                owner.by_epoch.setdefault(pl_module.current_epoch + 1, []).append(float(outputs["loss"]))

        self.hook = Hook()


@pytest.mark.parametrize("schedule", ["wsd", "onecycle"])
def test_the_default_rung_score_is_minus_the_epochs_mean_training_loss(data, tmp_path, schedule):
    """rung_score train_loss: the rung records minus the mean of the epoch's step losses (collected here from
    training_step's outputs, not from dse's history), under wsd too, with no decay branch and no trace on the
    run: the fit's weights and history are a plain fit's."""
    from dse.trials.pruning import MoashaCallback

    base_net, base = plain(data, schedule)
    steps = StepLosses()
    net, result, trial, cb = moasha_fit(data, tmp_path, schedule, rivals_at=LADDER, score="train_loss",
                                        extra=(steps.hook,))
    assert result.status == "ok" and cb.score == "train_loss"
    assert [len(steps.by_epoch[e]) for e in (1, 2, 3)] == [STEPS_PER_EPOCH] * 3
    for r in LADDER:
        expected = -sum(steps.by_epoch[r]) / STEPS_PER_EPOCH
        assert trial.system_attrs[f"dse:rung:{r}"] == pytest.approx(expected, rel=1e-5)
        assert trial.system_attrs[f"dse:rung:{r}"] != pytest.approx(result.history[r - 1]["val/acc"])
    assert "rung_branches" not in trial.user_attrs and cb.branches == {}
    assert same_weights(net, base_net) and curve(result) == curve(base)
    assert MoashaCallback(trial, LADDER, ETA, 0, str).score == "train_loss"  # the default
