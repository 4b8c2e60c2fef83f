"""The GPU memory probe: a pool worker's first fit writes its GPU memory to a file for dse.trials.pool.

dse.trials.pool sets MEMORY_PROBE_ENV in the first worker's environment; that worker's first fit on a GPU
calls `write_memory_probe` after a few optimizer steps (the LightningModule), and the pool turns the numbers into
one trial's footprint. Torch is imported inside the function, so the pool (which never touches CUDA) does not
load it.
"""
from __future__ import annotations

import json
import os

MEMORY_PROBE_ENV = "DSE_MEMORY_PROBE"  # set by dse.trials.pool: a file where a worker's first fit writes its GPU memory
PROBED: list[str] = []  # memory-probe files this process has written (at most one)


def write_memory_probe(path: str, device) -> None:
    """Write `device`'s memory now and this process's peak (bytes) as JSON to `path`, atomically; once per process."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    info = {"device": torch.cuda.get_device_name(device), "free": free, "total": total,
            "reserved": torch.cuda.memory_reserved(device), "peak_reserved": torch.cuda.max_memory_reserved(device),
            "peak_allocated": torch.cuda.max_memory_allocated(device), "pid": os.getpid(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    with open(f"{path}.tmp", "w") as fh:
        json.dump(info, fh)
    os.replace(f"{path}.tmp", path)
    PROBED.append(path)
