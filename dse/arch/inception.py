"""Inception stages (GoogLeNet modules) built from dse.count.inception's branch ops."""
from __future__ import annotations

import torch
from torch import nn

from dse.arch import layers
from dse.arch.plain import sequential
from dse.count.dense import check
from dse.count.inception import branch_ops, module_width


class InceptionModule(nn.Module):
    """concat(1x1, reduce-k1, reduce-k2, maxpool-proj) along channels (then dropout when the point has one)."""

    def __init__(self, point, index: int, module: int, cin: int):
        super().__init__()
        ops = branch_ops(point, index, module, cin)
        self.branches = nn.ModuleList(sequential(point, b) for b in ops[:3])
        self.pool_branch = nn.Sequential(nn.MaxPool2d(3, 1, 1), sequential(point, ops[3]))
        self.dropout = nn.Dropout(point.dropout) if point.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches] + [self.pool_branch(x)]
        return self.dropout(torch.cat(outs, 1))


def stage(point, index, cin, rates):
    """Build inception stage `index`: its modules, then its pool."""
    check(point, index, "inception")
    modules, c = [], cin
    for m in range(point.stages[index].depth):
        modules.append(InceptionModule(point, index, m, c))
        c = module_width(point, index, m)
    modules.append(layers.POOLS[point.stages[index].pool]())
    return nn.Sequential(*modules), c
