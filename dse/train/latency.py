"""Measured latency: a built Point timed on the trial's own device, cached by point id.

The net is built once, put in eval mode, and run on a fixed batch of random images at the point's geometry:
`warmup` passes first (allocator and cuDNN autotuning), then the median of `repeats` timed passes, in
milliseconds per batch. CUDA passes are timed with a synchronize on each side. The result depends on the
machine, so the cache key holds the device's name too.
"""
from __future__ import annotations

import statistics
import time

BATCH, WARMUP, REPEATS = 32, 3, 10


def device_name(device: str) -> str:
    """'cpu:2 threads' or the CUDA device's name: part of the cache key."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu:{torch.get_num_threads()} threads"


def measure(point, device: str = "cpu", batch: int = BATCH, warmup: int = WARMUP, repeats: int = REPEATS,
            image_size: int | None = None, in_chans: int | None = None, num_classes: int | None = None) -> float:
    """Median milliseconds of one forward pass of `batch` images through the built point, no gradients."""
    import torch

    from dse.network import build

    size, chans = image_size or point.image_size, in_chans or point.in_chans
    model = build(point, num_classes, chans, size).to(device).eval()
    x = torch.randn(batch, chans, size, size, device=device)
    cuda = device.startswith("cuda")
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def key(point_id: str, device: str, batch: int = BATCH, image_size: int = 0) -> str:
    """The study attribute that caches one point's latency on one kind of device."""
    return f"dse:latency:{device_name(device)}:{batch}:{image_size}:{point_id}"


def cached(study, point, device: str = "cpu", batch: int = BATCH, **geometry) -> tuple[float, bool]:
    """(milliseconds, True when it came from the study's cache); measured and stored when not cached."""
    size = geometry.get("image_size") or point.image_size
    name = key(point.id, device, batch, size)
    known = study._storage.get_study_system_attrs(study._study_id).get(name) if study is not None else None
    if known is not None:
        return float(known), True
    ms = measure(point, device, batch, image_size=size, in_chans=geometry.get("in_chans"),
                 num_classes=geometry.get("num_classes"))
    if study is not None:
        study._storage.set_study_system_attr(study._study_id, name, ms)
    return ms, False
