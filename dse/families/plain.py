"""Plain stages: conv-norm-act per kernel (LeNet, AlexNet, VGG, NIN), then the stage's pool (and dropout)."""
from __future__ import annotations

from dse.families.common import blocks, conv_norm_act, pool
from dse.graph.nodes import Dropout, Seq, seq
from dse.point import Point


def block(point: Point, index: int, b: int, cin: int, stride: int, drop_path: float) -> tuple[Seq, int]:
    """Block `b` of stage `index`: conv-norm-act per kernel, the stride on the first conv; its output width."""
    spec = point.stages[index]
    nodes, c = [], cin
    for j, k in enumerate(spec.kernels):
        nodes += conv_norm_act(point, c, spec.width, k, stride if j == 0 else 1,
                               padding=-1 if spec.padding == "same" else 0)
        c = spec.width
    return seq(nodes), c


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """Plain stage `index`: its blocks, then its pool; dropout after a pool (NIN)."""
    spec = point.stages[index]
    nodes, c = blocks(point, index, cin, rates, block)
    drop = [Dropout(point.dropout)] if point.dropout > 0 and spec.pool != "none" else []
    return Seq(tuple(nodes + pool(spec.pool) + drop)), c
