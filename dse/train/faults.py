"""TEST HOOK, not a feature: inject a fault into training from a test's subprocess.

Env DSE_TEST_FAULT=KIND[:CALLS] with KIND one of
    nan        the model's weights become NaN before the first step (the loss diverges)
    oom        torch.cuda.OutOfMemoryError is raised inside the first training step (no GPU needed)
    sleep=S    the first training step sleeps S seconds (a trial slow enough to kill mid-way)
and CALLS a comma list of which fit calls in this process get it (1-based; default: every call).
Several faults: separate them with ';', e.g. DSE_TEST_FAULT="nan:1;oom:2".
dse.train.fit adds `callbacks()` to every fit; with the variable unset it adds nothing.
"""
from __future__ import annotations

import os
import time

_calls = {"n": 0}


def callbacks() -> list:
    """The fault-injecting Lightning callback for this fit call, or [] (the normal case)."""
    spec = os.environ.get("DSE_TEST_FAULT", "").strip()
    if not spec:
        return []
    _calls["n"] += 1
    kinds = [k for k, _, calls in (part.partition(":") for part in spec.split(";"))
             if not calls or str(_calls["n"]) in calls.split(",")]
    if not kinds:
        return []
    kind = kinds[0].strip()
    import lightning.pytorch as pl
    import torch

    class Fault(pl.Callback):
        """Injects DSE_TEST_FAULT at the first training batch."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx or trainer.current_epoch:
                return
            if kind == "nan":
                with torch.no_grad():
                    for p in pl_module.parameters():
                        p.fill_(float("nan"))
            elif kind == "oom":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. (simulated by DSE_TEST_FAULT)")
            elif kind.startswith("sleep="):
                time.sleep(float(kind.split("=", 1)[1]))
            else:
                raise ValueError(f"DSE_TEST_FAULT: unknown kind {kind!r}; valid: nan, oom, sleep=S")

    return [Fault()]
