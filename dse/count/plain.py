"""Plain stages (conv-norm-act per kernel: LeNet, VGG, AlexNet, NIN) and the op list shared by the residual family.

A block is described once, as a tuple of `Op`s; `count_ops` counts it here and dse.arch.plain builds it,
so the analytic count and the module read the same description.
"""
from __future__ import annotations

from typing import NamedTuple

from dse.count import attention
from dse.count.layers import Count, conv, norm, pool
from dse.point import Point


class Op(NamedTuple):
    """One layer of a block: conv, norm, act, dropout, or an attention module (dse.count.attention.KINDS)."""

    kind: str
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    padding: int = -1  # -1: kernel // 2

    @property
    def pad(self) -> int:
        """Padding in pixels."""
        return self.kernel // 2 if self.padding < 0 else self.padding


def conv_norm_act(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, padding: int = -1,
                  apply_act: bool = True) -> list[Op]:
    """Ops for conv -> norm (-> act)."""
    ops = [Op("conv", cin, cout, kernel, stride, groups, padding), Op("norm", cout, cout)]
    return ops + [Op("act", cout, cout)] if apply_act else ops


def count_ops(point: Point, ops, c: int, h: int, w: int) -> Count:
    """Params and MACs of a sequence of ops applied to a c x h x w input."""
    total = Count(0, 0, c, h, w)
    for op in ops:
        if op.kind == "conv":
            step = conv(op.cin, op.cout, total.h, total.w, op.kernel, op.stride, op.pad, op.groups,
                        bias=point.norm == "none")
        elif op.kind == "norm":
            step = norm(op.cout, total.h, total.w, point.norm == "bn")
        elif op.kind in ("act", "dropout"):
            step = Count(0, 0, total.c, total.h, total.w)
        else:
            step = attention.count(point, op, total.h, total.w)
        total = total.then(step)
    return total


def block_ops(point: Point, index: int, block: int, cin: int) -> list[Op]:
    """conv-norm-act for each kernel of the stage; stride on the first conv of the first block."""
    stage = point.stages[index]
    ops, c = [], cin
    for j, k in enumerate(stage.kernels):
        stride = stage.stride if block == 0 and j == 0 else 1
        ops += conv_norm_act(c, stage.width, k, stride, padding=-1 if stage.padding == "same" else 0)
        c = stage.width
    return ops


def stage(point: Point, index: int, cin: int, h: int, w: int, first_block: int) -> Count:
    """Count plain stage `index`: its blocks, then its pool (dropout after the pool costs nothing)."""
    total = Count(0, 0, cin, h, w)
    for b in range(point.stages[index].depth):
        total = total.then(count_ops(point, block_ops(point, index, b, total.c), total.c, total.h, total.w))
    return total.then(pool(point.stages[index].pool, total.c, total.h, total.w))
