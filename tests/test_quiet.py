"""A trial's Trainer says nothing about `srun` on a machine with SLURM installed (it printed Lightning's hint to
prepend `srun` once per trial). Needs the real `srun` on PATH: .ci/install installs slurm-wlm."""
from __future__ import annotations

import os
import shutil
import warnings

import pytest


def test_no_srun_hint_per_trial():
    if not shutil.which("srun"):
        if os.environ.get("DSE_REQUIRE_SLURM") == "1":
            pytest.fail("srun is not on PATH (install slurm-wlm)")
        pytest.skip("srun is not on PATH: the hint cannot appear")
    import lightning.pytorch as pl

    from dse.train.fit import quiet

    env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SLURM_")}
    try:
        with warnings.catch_warnings(record=True) as before:
            warnings.simplefilter("always")
            pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False)
        with warnings.catch_warnings(record=True) as after:
            warnings.simplefilter("always")
            quiet()
            pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False)
    finally:
        os.environ.update(env)
    srun = [str(w.message) for w in before if "srun" in str(w.message)]
    assert srun, "Lightning no longer warns about srun here: the test shows nothing"
    assert not [str(w.message) for w in after if "srun" in str(w.message)]
