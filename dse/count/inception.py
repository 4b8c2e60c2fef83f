"""Inception stages (GoogLeNet modules) as ops, and their analytic counts.

A module has four branches, each a chain of conv-norm-act units, concatenated:
1x1 | 1x1 reduce - k1 x k1 | 1x1 reduce - k2 x k2 | 3x3/1 max-pool - 1x1 projection, with widths
(1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) from `stage.branches` and k1, k2 the first and last
of `stage.kernels` (torchvision's googlenet uses 3x3 for the "5x5" branch: kernels (3, 3)). Dropout, when
the point has one, follows each module's concatenation. dse.arch.inception builds the same ops.
"""
from __future__ import annotations

from dse.count.dense import check
from dse.count.layers import Count, pool
from dse.count.plain import Op, conv_norm_act, count_ops
from dse.point import Point


def branch_ops(point: Point, index: int, module: int, cin: int) -> list[list[Op]]:
    """The four branches of module `module` of stage `index`; the last runs after a 3x3/1 max-pool."""
    stage = point.stages[index]
    b1, r3, c3, r5, c5, proj = stage.branches[module]
    k1, k2 = stage.kernels[0], stage.kernels[-1]
    return [conv_norm_act(cin, b1, 1),
            conv_norm_act(cin, r3, 1) + conv_norm_act(r3, c3, k1),
            conv_norm_act(cin, r5, 1) + conv_norm_act(r5, c5, k2),
            conv_norm_act(cin, proj, 1)]


def module_width(point: Point, index: int, module: int) -> int:
    """Output channels of a module: 1x1 + 3x3 + 5x5 + pool proj."""
    b1, _, c3, _, c5, proj = point.stages[index].branches[module]
    return b1 + c3 + c5 + proj


def stage(point: Point, index: int, cin: int, h: int, w: int, first_block: int) -> Count:
    """Count inception stage `index`: its modules, then its pool."""
    check(point, index, "inception")
    total = Count(0, 0, cin, h, w)
    for m in range(point.stages[index].depth):
        for ops in branch_ops(point, index, m, total.c):
            step = count_ops(point, ops, total.c, total.h, total.w)
            total = Count(total.params + step.params, total.macs + step.macs, total.c, total.h, total.w)
        total = Count(total.params, total.macs, module_width(point, index, m), total.h, total.w)
    return total.then(pool(point.stages[index].pool, total.c, total.h, total.w))
