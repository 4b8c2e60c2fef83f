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
