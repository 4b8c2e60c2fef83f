"""Dense stages (DenseNet) as ops, and their analytic counts.

A dense layer is [norm-act-1x1 conv to `dense_bottleneck` x growth] then norm-act-k x k conv to
`growth_rate` per kernel of the stage, with dropout after each conv; its output is concatenated to its
input. A stage with a pool ends in a transition: norm-act-1x1 conv to floor(compression x c) (+ dropout),
then the pool. dse.arch.dense builds the same ops.
"""
from __future__ import annotations

import math

from dse.count.layers import Count, pool
from dse.count.plain import Op, count_ops
from dse.errors import UserError
from dse.point import Point


def check(point: Point, index: int, family: str) -> None:
    """Raise UserError when stage `index` asks for what concatenating blocks cannot do (stride, valid, attention)."""
    stage = point.stages[index]
    if stage.stride != 1:
        raise UserError(f"stages[{index}].stride: {family} stages keep their resolution (downsample with the "
                        f"stage pool); got {stage.stride}")
    if stage.padding != "same":
        raise UserError(f"stages[{index}].padding: {family} stages need 'same' padding, got {stage.padding!r}")
    if point.attention != "none":
        raise UserError(f"attention: attention {point.attention!r} is not supported for block {stage.block!r}; "
                        f"supported: none")


def _pre_conv(point: Point, cin: int, cout: int, kernel: int) -> list[Op]:
    """norm -> act -> conv (-> dropout)."""
    drop = [Op("dropout", cout, cout)] if point.dropout > 0 else []
    return [Op("norm", cin, cin), Op("act", cin, cin), Op("conv", cin, cout, kernel)] + drop


def layer_ops(point: Point, index: int, cin: int) -> list[Op]:
    """The ops of one dense layer fed with `cin` channels (it adds `growth_rate` channels)."""
    ops, c = [], cin
    if point.dense_bottleneck:
        ops, c = _pre_conv(point, cin, point.dense_bottleneck * point.growth_rate, 1), \
            point.dense_bottleneck * point.growth_rate
    for k in point.stages[index].kernels:
        ops += _pre_conv(point, c, point.growth_rate, k)
        c = point.growth_rate
    return ops


def transition_width(point: Point, c: int) -> int:
    """Channels after a transition: floor(compression x c), at least 1."""
    return max(1, math.floor(point.compression * c))


def transition_ops(point: Point, index: int, c: int) -> list[Op]:
    """norm-act-1x1 conv (+ dropout) before the stage's pool; none when the stage has no pool."""
    if point.stages[index].pool == "none":
        return []
    return _pre_conv(point, c, transition_width(point, c), 1)


def stage(point: Point, index: int, cin: int, h: int, w: int, first_block: int) -> Count:
    """Count dense stage `index`: its layers, then the transition and pool when the stage has a pool."""
    check(point, index, "dense")
    total = Count(0, 0, cin, h, w)
    for _ in range(point.stages[index].depth):
        new = count_ops(point, layer_ops(point, index, total.c), total.c, total.h, total.w)
        total = Count(total.params + new.params, total.macs + new.macs, total.c + new.c, total.h, total.w)
    total = total.then(count_ops(point, transition_ops(point, index, total.c), total.c, total.h, total.w))
    return total.then(pool(point.stages[index].pool, total.c, total.h, total.w))
