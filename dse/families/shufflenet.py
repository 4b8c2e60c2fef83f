"""ShuffleNet V2 stages (Ma et al., ECCV 2018), in torchvision's layout (block 'shuffle').

A stage of `depth` units at `width` output channels (even); each branch carries width / 2 channels.
- The first unit, where the stage downsamples or widens, has two branches on the whole input:
  branch 1 = k x k depthwise (stride s) -> norm -> 1x1 -> norm -> act;
  branch 2 = 1x1 -> norm -> act -> k x k depthwise (stride s) -> norm -> 1x1 -> norm -> act [-> SE].
- Every other unit splits its channels in half: the first half passes untouched, the second goes through
  branch 2 (stride 1).
Both concatenate their branches (first, then second) and shuffle the channels in 2 groups. There is no
residual add, so no drop-path; `kernels[0]` is the depthwise kernel. SE (the point's `attention`, timm's
SEModule) sits at the end of branch 2, as in the paper's SE-ShuffleNet V2.
"""
from __future__ import annotations

from dse.families import common
from dse.families.common import conv_norm_act
from dse.graph.nodes import Attention, Concat, Seq, Shuffle, Slice, seq
from dse.point import Point


def branch(point: Point, cin: int, c: int, kernel: int, stride: int) -> list:
    """Branch 2: 1x1 -> norm -> act -> k x k depthwise -> norm -> 1x1 -> norm -> act [-> SE], to c channels."""
    se = [Attention("se", c, c, ratio=point.attn_ratio, act=point.act)] if point.attention == "se" else []
    return [*conv_norm_act(point, cin, c, 1), *conv_norm_act(point, c, c, kernel, stride, groups=c, act=False),
            *conv_norm_act(point, c, c, 1), *se]


def down(point: Point, cin: int, cout: int, kernel: int, stride: int) -> Seq:
    """The two-branch unit (stride s, or a change of width): concat(branch 1, branch 2), shuffle."""
    c = cout // 2
    first = seq(conv_norm_act(point, cin, cin, kernel, stride, groups=cin, act=False), conv_norm_act(point, cin, c, 1))
    return Seq((Concat((first, seq(branch(point, cin, c, kernel, stride)))), Shuffle(2)))


def split(point: Point, cout: int, kernel: int) -> Seq:
    """The stride-1 unit: the first half of the channels passes, the second goes through branch 2; shuffle."""
    c = cout // 2
    return Seq((Concat((Seq((Slice(0, c),)), seq(Slice(c, cout), branch(point, c, c, kernel, 1)))), Shuffle(2)))


def unit(point: Point, index: int, b: int, cin: int, stride: int, drop_path: float) -> tuple[Seq, int]:
    """Unit `b` of stage `index` and its output width: two branches where the shape changes, else a split."""
    k, cout = point.stages[index].kernels[0], point.stages[index].width
    return (down(point, cin, cout, k, stride) if stride > 1 or cin != cout else split(point, cout, k)), cout


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """ShuffleNet V2 stage `index`: a two-branch unit where the shape changes, then split units, then its pool."""
    return common.stage(point, index, cin, rates, unit)
