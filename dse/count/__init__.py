"""Analytic complexity of a Point: exact params and multiply-add FLOPs, without building a module.

FLOPs here are multiply-adds of conv and linear layers (the ResNet/ResNeXt papers' and torchvision's
convention), which equals `FlopCounterMode` total / 2 on one forward pass. Torch is never imported.
"""
from __future__ import annotations

from typing import NamedTuple

from dse.count import blocks
from dse.count.layers import Count, conv, linear, norm, pool
from dse.errors import choose
from dse.point import PREACT, Point


class Complexity(NamedTuple):
    """Parameter count and multiply-add FLOPs of one forward pass of one image."""

    params: int
    flops: int


def stem(point: Point, c: int, h: int, w: int) -> Count:
    """The stem conv (+ norm) and its pool."""
    s = point.stem
    if s.type == "none":
        return pool(s.pool, c, h, w)
    pad = s.kernel // 2 if s.padding < 0 else s.padding
    out = conv(c, s.width, h, w, s.kernel, s.stride, pad, bias=point.norm == "none")
    if s.type == "conv":
        out = out.then(norm(s.width, out.h, out.w, point.norm == "bn"))
    return out.then(pool(s.pool, *out[2:]))


def head(point: Point, c: int, h: int, w: int, num_classes: int) -> Count:
    """Final norm (pre-activation nets), pooling, hidden fc layers and the classifier."""
    total = norm(c, h, w, point.stages[-1].block in PREACT and point.norm == "bn")
    hd = point.head
    if hd.type == "conv":
        return total.then(conv(c, num_classes, h, w, 1, bias=True)).then(Count(0, 0, num_classes, 1, 1))
    flat = {"avg": c, "max": c, "adaptive": c * hd.pool_size ** 2, "flatten": c * h * w}[hd.pool]
    for width in hd.hidden:
        total = total.then(linear(flat, width))
        flat = width
    return total.then(linear(flat, num_classes))


def complexity(point: Point, image_size: int | None = None, in_chans: int | None = None,
               num_classes: int | None = None) -> Complexity:
    """Exact (params, multiply-add FLOPs) of `point` at the given geometry (default: the point's own)."""
    size = image_size or point.image_size
    total = stem(point, in_chans or point.in_chans, size, size)
    block_index = 0
    for i, stage in enumerate(point.stages):
        count_stage = choose("block", stage.block, blocks.BLOCKS)
        total = total.then(count_stage(point, i, total.c, total.h, total.w, block_index))
        block_index += stage.depth
    total = total.then(head(point, total.c, total.h, total.w, num_classes or point.num_classes))
    return Complexity(total.params, total.macs)
