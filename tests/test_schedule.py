"""The wsd lr schedule (hand-computed factors, bad keys) and rung scores on discarded decay branches (real fits)."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from torch import nn

from dse.errors import UserError
from dse.train.recipe import Recipe, recipe, wsd_factor

ROOT = Path(__file__).resolve().parents[1]


def test_wsd_factor_by_hand():
    # 100 steps, 10% warm-up, 20% decay: up over steps 0..9, 1 over 10..79, (100 - s) / 20 over 80..99
    f = [wsd_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == pytest.approx(1.0)
    assert f[10:80] == [1.0] * 70
    assert f[80] == pytest.approx(1.0) and f[90] == pytest.approx(0.5) and f[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(f[80:], f[81:]))


def test_wsd_scheduler_drives_sgd():
    r = recipe({"schedule": "wsd", "epochs": 2, "lr": 0.2, "warmup_fraction": 0.25, "decay_fraction": 0.5})
    from dse.train.recipe import scheduler
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=r.lr)
    sched = scheduler(r, opt, steps_per_epoch=4)  # 8 steps: warm 2, stable 2, decay 4
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.2, 0.15, 0.1, 0.05])


@pytest.mark.parametrize("cfg, words", [
    ({"warmup_fraction": -0.1}, "trainer.warmup_fraction"),
    ({"decay_fraction": 1.5}, "trainer.decay_fraction"),
    ({"decay_fraction": "x"}, "trainer.decay_fraction"),
    ({"warmup_fraction": 0.5, "decay_fraction": 0.6}, "must be <= 1"),
    ({"schedule": "trapeze"}, "trainer.schedule"),
])
def test_bad_wsd_keys(cfg, words):
    with pytest.raises(UserError) as err:
        recipe({"schedule": "wsd", **cfg})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_rungs():
    from dse.train.recipe import parse_rungs
    assert parse_rungs("1/3, 1/9") == (Fraction(1, 9), Fraction(1, 3))
    for bad in ("0", "1", "1/0", "a"):
        with pytest.raises(UserError, match="rungs"):
            parse_rungs(bad)


def test_bad_schedule_on_command_line_is_one_line():
    proc = subprocess.run([sys.executable, "bench/make_tabular.py", "--out", "/nonexistent/x.csv",
                           "--schedule", "wsd", "--decay-fraction", "2"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "decay" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def data():
    from dse.train import datasets
    return datasets.load("fashion_mnist", subset=256, val_subset=128, augment=False, seed=0)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(8 * 7 * 7, 10))


def run(data, rungs=None, decay=0.5, schedule="wsd"):
    from dse.train.fit import fit
    from dse.train.rungs import RungScores
    r = Recipe(epochs=3, batch_size=32, lr=0.1, schedule=schedule, threads=1, seed=3, accelerator="cpu")
    net = tiny_net()
    cbs = (RungScores(rungs, decay=decay, seed=r.seed),) if rungs else ()
    result = fit(net, data, r, callbacks=cbs, progress=False)
    assert result.status == "ok"
    return net, result, (cbs[0].records if cbs else [])


def test_branches_leave_the_main_run_unchanged_and_repeat(data):
    plain_net, plain, _ = run(data)
    net, result, records = run(data, rungs="1/9,1/3,2/3,0.9")
    # 8 steps per epoch, 24 in all; wsd decays over the last 20% (from step 19): rung 0.9 (step 22) is in place
    assert [r["step"] for r in records] == [3, 8, 16, 22]
    assert [r["branch_steps"] for r in records] == [2, 4, 8, 0]
    assert all(r["branch_cpu"] > 0 and 0 <= r["acc"] <= 1 for r in records)
    for a, b in zip(plain_net.state_dict().values(), net.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)  # the branches did not touch the main run
    assert result.val_acc == pytest.approx(plain.val_acc, abs=1e-9)
    # the score at rung 2/3 comes from a branch: not the in-place score of the same state
    _, _, inplace = run(data, rungs="2/3", decay=0.0)
    assert inplace[0]["branch_steps"] == 0 and inplace[0]["step"] == 16
    assert inplace[0]["loss"] != pytest.approx(records[2]["loss"], abs=1e-6)
    _, _, again = run(data, rungs="1/9,1/3,2/3,0.9")  # deterministic given the seed
    assert [(r["acc"], r["loss"]) for r in again] == [(r["acc"], r["loss"]) for r in records]
