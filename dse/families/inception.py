"""Inception stages (GoogLeNet modules): four branches of conv-norm-act units, concatenated.

1x1 | 1x1 reduce - k1 x k1 | 1x1 reduce - k2 x k2 | 3x3/1 max-pool - 1x1 projection, widths (1x1, 3x3 reduce,
3x3, 5x5 reduce, 5x5, pool proj) from `stage.branches`, k1 and k2 the first and last of `stage.kernels`
(torchvision's googlenet uses 3x3 for the "5x5" branch: kernels (3, 3)). Dropout, when the point has one,
follows each module's concatenation.
"""
from __future__ import annotations

from dse.families import common
from dse.families.common import conv_norm_act
from dse.graph.nodes import Concat, Dropout, Pool, Seq, seq
from dse.point import Point


def module(point: Point, index: int, m: int, cin: int, stride: int, drop_path: float) -> tuple[Seq, int]:
    """Module `m` of stage `index` and its output width (inception stages keep stride 1 and have no drop-path)."""
    stage = point.stages[index]
    b1, r3, c3, r5, c5, proj = stage.branches[m]
    k1, k2 = stage.kernels[0], stage.kernels[-1]
    branches = (seq(conv_norm_act(point, cin, b1, 1)),
                seq(conv_norm_act(point, cin, r3, 1), conv_norm_act(point, r3, c3, k1)),
                seq(conv_norm_act(point, cin, r5, 1), conv_norm_act(point, r5, c5, k2)),
                seq(Pool("max", 3, 1, 1), conv_norm_act(point, cin, proj, 1)))
    drop = [Dropout(point.dropout)] if point.dropout > 0 else []
    return seq(Concat(branches), drop), b1 + c3 + c5 + proj


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """Inception stage `index`: its modules, then its pool."""
    return common.stage(point, index, cin, rates, module)
