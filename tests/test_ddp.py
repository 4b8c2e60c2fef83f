"""One trial on two DDP ranks (Lightning's subprocess launcher, gloo on CPU): rank 1 is a re-run of the same
`python -m dse.search` command, trains rank 0's point in step and never opens the storage.

CI has no GPU, so the ranks are two CPU processes: the same code path as two GPUs except for NCCL and the
device placement. A pruner is on, so rank 1 takes part in the pruning callback's broadcast every epoch.
"""
from __future__ import annotations

import pytest

from search_helpers import load_study, ok, read_csv, search

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.threads=1",
       "trainer.max_epochs=2", "trainer.limit_batches=2"]


@pytest.mark.slow
def test_ddp_trial_on_two_ranks_only_rank_0_writes(tmp_path):
    # two trials: the second one's rank 1 is a new process, started after the first trial's ranks ended (each rank 1
    # is a fresh interpreter, ~10-40 s of imports: a third trial showed nothing the second does not)
    proc = ok(search("space=resnext", "study.objectives=[error]", "study.pruner=median", "study.n_trials=2",
                     "study.name=ddp", *DDP, cwd=tmp_path, timeout=600))
    trials = load_study(tmp_path / "runs/ddp", "ddp").trials
    trained = [t for t in trials if t.user_attrs.get("status") not in ("rejected", "duplicate")]
    assert len(trained) == 2  # rank 1 asked for no trial of its own; each trial launched its own rank 1
    for t in trained:
        assert t.state.name in ("COMPLETE", "PRUNED"), t.user_attrs
        assert t.user_attrs["epochs"] >= 1 and t.intermediate_values  # the pruner saw rank 0's val/acc
    assert sum(1 for ln in proc.stdout.splitlines() if ln.startswith("study ddp:")) == 1  # one summary: rank 0's
    assert len(read_csv(tmp_path / "runs/ddp/trials.csv")) == len(trials)


def test_a_follower_rank_trains_rank_0s_sized_data_and_batch(monkeypatch):
    """A study's sizing cuts rank 0's data and batch below the command line's; the follower rank re-reads the
    command line, so rank 0 hands it its sizes (dse.train.ddp.share) and it trains exactly rank 0's samples
    (the first of each seeded split, as dse.trials.sizing.with_subset cuts them) at rank 0's batch. Before, the
    follower trained the unsized data at the unsized batch: other step counts than rank 0's under DDP."""
    import dataclasses

    import torch

    from dse.point import Point
    from dse.train import datasets, ddp
    from dse.train.recipe import recipe as make_recipe
    from dse.trials import sizing
    from dse.zoo import get

    data = datasets.load("synthetic", subset=512, val_subset=256)
    unsized = dataclasses.replace(make_recipe(), batch_size=64)
    rank0_data, rank0_batch = sizing.with_subset(data, 200, 100), 16  # what size_trials gives rank 0
    point = get("resnet20")
    seen = {}

    def fit(p, d, r, **_):  # the follower's fit (injected, as dse.search passes dse.train.fit.fit)
        seen.update(point=p, data=d, recipe=r)

    for key in (*ddp.LAUNCHER_KEYS, ddp.POINT, ddp.SIZE):
        monkeypatch.delenv(key, raising=False)
    with ddp.share(point, 7, False, (len(rank0_data.train), len(rank0_data.val), rank0_batch)):
        monkeypatch.setenv("LOCAL_RANK", "1")  # as Lightning's launcher starts rank 1
        assert ddp.is_follower()
        assert ddp.follow(fit, data, unsized) == 0
    assert isinstance(seen["point"], Point) and seen["point"].id == point.id
    assert seen["recipe"].batch_size == rank0_batch and seen["recipe"].seed == 7
    for name in ("train", "val"):
        mine, rank0 = getattr(seen["data"], name), getattr(rank0_data, name)
        assert len(mine) == len(rank0) and torch.equal(mine.x, rank0.x) and torch.equal(mine.y, rank0.y)
