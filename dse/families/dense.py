"""Dense stages (DenseNet): each layer's output is concatenated to its input; a transition ends a stage.

A layer is [norm-act-1x1 conv to `dense_bottleneck` x growth] then norm-act-k x k conv to `growth_rate` per
kernel of the stage, with dropout after each conv. A stage with a pool ends in a transition: norm-act-1x1
conv to floor(compression x c) (+ dropout), then the pool.
"""
from __future__ import annotations

import math

from dse.families.common import blocks, conv, norm_act, pool
from dse.graph.nodes import Concat, Dropout, Seq, seq
from dse.point import Point


def _pre_conv(point: Point, cin: int, cout: int, kernel: int) -> list:
    """norm -> act -> conv (-> dropout)."""
    return norm_act(point, cin) + [conv(point, cin, cout, kernel)] + \
        ([Dropout(point.dropout)] if point.dropout > 0 else [])


def layer(point: Point, index: int, cin: int) -> list:
    """The convs of one dense layer fed with `cin` channels (they make `growth_rate` channels)."""
    nodes, c = [], cin
    if point.dense_bottleneck:
        c = point.dense_bottleneck * point.growth_rate
        nodes = _pre_conv(point, cin, c, 1)
    for k in point.stages[index].kernels:
        nodes += _pre_conv(point, c, point.growth_rate, k)
        c = point.growth_rate
    return nodes


def transition_width(point: Point, c: int) -> int:
    """Channels after a transition: floor(compression x c), at least 1."""
    return max(1, math.floor(point.compression * c))


def block(point: Point, index: int, b: int, cin: int, stride: int, drop_path: float) -> tuple[Concat, int]:
    """Layer `b` of stage `index` concatenated to its input, and the width it leaves (cin + growth_rate)."""
    return Concat((Seq(), seq(layer(point, index, cin)))), cin + point.growth_rate


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """Dense stage `index`: its layers, then the transition and pool when the stage has a pool."""
    nodes, c = blocks(point, index, cin, rates, block)
    if point.stages[index].pool != "none":
        nodes.append(seq(_pre_conv(point, c, transition_width(point, c), 1)))
        c = transition_width(point, c)
    return Seq(tuple(nodes + pool(point.stages[index].pool))), c
