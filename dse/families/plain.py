"""Plain stages: conv-norm-act per kernel (LeNet, AlexNet, VGG, NIN), then the stage's pool (and dropout)."""
from __future__ import annotations

from dse.families.common import conv_norm_act, pool
from dse.graph.nodes import Dropout, Seq, seq
from dse.point import Point


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """Plain stage `index`: the stride on the first conv of the first block; dropout after a pool (NIN)."""
    spec = point.stages[index]
    nodes, c = [], cin
    for b in range(spec.depth):
        block = []
        for j, k in enumerate(spec.kernels):
            stride = spec.stride if b == 0 and j == 0 else 1
            block += conv_norm_act(point, c, spec.width, k, stride, padding=-1 if spec.padding == "same" else 0)
            c = spec.width
        nodes.append(seq(block))
    drop = [Dropout(point.dropout)] if point.dropout > 0 and spec.pool != "none" else []
    return Seq(tuple(nodes + pool(spec.pool) + drop)), c
