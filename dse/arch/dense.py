"""Dense stages (DenseNet) built from dse.count.dense's ops: concatenated layers, transition, pool."""
from __future__ import annotations

import torch
from torch import nn

from dse.arch import layers
from dse.arch.plain import sequential
from dse.count.dense import check, layer_ops, transition_ops


class DenseLayer(nn.Module):
    """out = concat(x, layer(x)) along channels."""

    def __init__(self, point, index: int, cin: int):
        super().__init__()
        self.layer = sequential(point, layer_ops(point, index, cin))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layer(x)], 1)


def stage(point, index, cin, rates):
    """Build dense stage `index`: its layers, then transition and pool when the stage has a pool."""
    check(point, index, "dense")
    blocks, c = [], cin
    for _ in range(point.stages[index].depth):
        blocks.append(DenseLayer(point, index, c))
        c += point.growth_rate
    ops = transition_ops(point, index, c)
    if ops:
        blocks.append(sequential(point, ops))
        c = ops[2].cout
    blocks.append(layers.POOLS[point.stages[index].pool]())
    return nn.Sequential(*blocks), c
