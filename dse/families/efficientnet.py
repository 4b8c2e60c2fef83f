"""EfficientNet stages (Tan & Le, ICML 2019), in timm's layout (block 'mbconv').

A stage of `depth` blocks at `width` output channels; the first block has the stage's stride. The stage's
expansion e (`Stage.expansion`, 0: the point's) picks the block:
- e == 1, timm's DepthwiseSeparableConv: k x k depthwise -> norm -> act [-> SE] -> 1x1 -> norm;
- e != 1, timm's InvertedResidual (MBConv): 1x1 expand to make_divisible(cin x e, 8) -> norm -> act ->
  k x k depthwise -> norm -> act [-> SE] -> 1x1 project -> norm.
SE (point.attention 'se') is timm's SqueezeExcite on the expanded width with round(mid x attn_ratio / e)
reduced channels: attn_ratio (0.25 in EfficientNet) of the block's input width, rounded as timm rounds it.
Shortcuts by `point.skip`: identity (timm: an identity add, with drop-path, where stride is 1 and the width
stays; none elsewhere), none, or projection (a 1x1 conv + norm where the shape changes). `kernels[0]` is the
depthwise kernel.
"""
from __future__ import annotations

from dse.families import common
from dse.families.common import conv_norm_act, residual, shortcut
from dse.channels import make_divisible
from dse.graph.nodes import Add, Attention, Seq
from dse.point import Point


def expansion(point: Point, index: int) -> float:
    """Stage `index`'s expansion ratio (its own, else the point's)."""
    return point.stages[index].expansion or point.expansion


def mid_width(cin: int, e: float) -> int:
    """The depthwise conv's width: the input's at e == 1, else timm's make_divisible(cin x e)."""
    return cin if e == 1 else make_divisible(cin * e)


def se_width(mid: int, e: float, ratio: float) -> int:
    """timm's SqueezeExcite reduced width: round(mid x (ratio / e)), i.e. `ratio` of the block's input (>= 1)."""
    return max(1, round(mid * (ratio / e)))


def branch(point: Point, cin: int, cout: int, kernel: int, stride: int, e: float) -> list:
    """[1x1 expand -> norm -> act] -> k x k depthwise -> norm -> act [-> SE] -> 1x1 project -> norm."""
    mid = mid_width(cin, e)
    nodes = conv_norm_act(point, cin, mid, 1) if e != 1 else []
    nodes += conv_norm_act(point, mid, mid, kernel, stride, groups=mid)
    if point.attention == "se":
        nodes.append(Attention("se_mb", mid, mid, rd=se_width(mid, e, point.attn_ratio), act=point.act))
    return nodes + conv_norm_act(point, mid, cout, 1, act=False)


def block(point: Point, index: int, b: int, cin: int, stride: int, drop_path: float) -> tuple[Add | Seq, int]:
    """Block `b` of stage `index`, fed with `cin` channels, and its output width."""
    stage = point.stages[index]
    cout = stage.width
    short = shortcut(point, cin, cout, stride)
    if point.skip == "identity" and short:  # timm: no shortcut where the shape changes
        short = None
    nodes = branch(point, cin, cout, stage.kernels[0], stride, expansion(point, index))
    return residual(nodes, short, drop_path, f"stages[{index}] block {b}"), cout


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """MBConv stage `index`: its blocks, then its pool."""
    return common.stage(point, index, cin, rates, block)
