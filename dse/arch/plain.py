"""Plain stages (conv-norm-act per kernel: LeNet, VGG, AlexNet, NIN) and the op -> module map.

The ops come from dse.count.plain, which also counts them.
"""
from __future__ import annotations

from torch import nn

from dse.arch import attention, layers
from dse.count.plain import block_ops


def module(point, op) -> nn.Module:
    """The module for one op (dse.count.plain.Op)."""
    if op.kind == "conv":
        return layers.conv(point, op.cin, op.cout, op.kernel, op.stride, op.pad, op.groups)
    if op.kind == "norm":
        return layers.norm(point, op.cout)
    if op.kind == "act":
        return layers.act(point)
    if op.kind == "dropout":
        return nn.Dropout(point.dropout)
    return attention.build(point, op)


def sequential(point, ops) -> nn.Module:
    """An nn.Sequential of the ops (Identity when there are none)."""
    return nn.Sequential(*(module(point, op) for op in ops)) if ops else nn.Identity()


def stage(point, index, cin, rates):
    """Build plain stage `index`: its blocks, its pool, and dropout after a pool when the point has one (NIN)."""
    spec = point.stages[index]
    blocks, c = [], cin
    for b in range(spec.depth):
        blocks.append(sequential(point, block_ops(point, index, b, c)))
        c = spec.width
    blocks.append(layers.POOLS[spec.pool]())
    if point.dropout > 0 and spec.pool != "none":
        blocks.append(nn.Dropout(point.dropout))
    return nn.Sequential(*blocks), c
