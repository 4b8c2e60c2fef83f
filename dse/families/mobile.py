"""Mobile stages: depthwise-separable (MobileNet-v1, Xception-like) and inverted-residual (MobileNet-v2) blocks.

dwsep: per kernel k of the stage, depthwise k x k -> norm -> act -> pointwise 1x1 to `width` -> norm -> act.
inverted: 1x1 expand to round(cin x expansion) (left out at expansion 1), depthwise k x k, 1x1 project without
act. The stride sits on the block's first depthwise conv.

Shortcuts by `point.skip`:
  none        no shortcut (dwsep keeps the act after its last pointwise conv: MobileNet-v1)
  identity    identity where stride 1 and cin == cout, no shortcut elsewhere (MobileNet-v2 convention)
  projection  identity where the shape stays, 1x1 conv + norm where it changes (Xception-like dwsep)
With a shortcut the block is linear at its end: no act after the last pointwise conv and none after the
add. Attention se/eca/cbam sits after the (last) depthwise act; sk/splat are not supported.
"""
from __future__ import annotations

from dse.families import common
from dse.families.common import conv_norm_act, residual, shortcut
from dse.graph.nodes import Add, Attention, Dropout, Seq
from dse.point import Point


def expanded(point: Point, cin: int) -> int:
    """The inverted block's expanded width: round(cin x expansion)."""
    return int(round(cin * point.expansion))


def _attention(point: Point, c: int) -> list:
    return [] if point.attention == "none" else [Attention(point.attention, c, c, ratio=point.attn_ratio, act=point.act)]


def _branch(point: Point, index: int, cin: int, stride: int, linear: bool) -> list:
    """The block's convs; `linear` drops the act after the last pointwise conv (dwsep; inverted always is)."""
    stage = point.stages[index]
    cout, ks = stage.width, stage.kernels
    drop = [Dropout(point.dropout)] if point.dropout > 0 else []
    if stage.block == "dwsep":
        nodes, c = [], cin
        for j, k in enumerate(ks):
            last = j == len(ks) - 1
            nodes += conv_norm_act(point, c, c, k, stride if j == 0 else 1, groups=c)
            if last:
                nodes += _attention(point, c) + drop
            nodes += conv_norm_act(point, c, cout, 1, act=not (linear and last))
            c = cout
        return nodes
    mid = expanded(point, cin)
    nodes = conv_norm_act(point, cin, mid, 1) if point.expansion != 1 else []
    for j, k in enumerate(ks):
        nodes += conv_norm_act(point, mid, mid, k, stride if j == 0 else 1, groups=mid)
    return nodes + _attention(point, mid) + drop + conv_norm_act(point, mid, cout, 1, act=False)


def block(point: Point, index: int, b: int, cin: int, stride: int, drop_path: float) -> tuple[Add | Seq, int]:
    """Block `b` of stage `index`, fed with `cin` channels, and its output width."""
    cout = point.stages[index].width
    short = shortcut(point, cin, cout, stride)
    if point.skip == "identity" and short:  # MobileNet-v2: no shortcut where the shape changes
        short = None
    branch = _branch(point, index, cin, stride, linear=point.skip != "none")
    return residual(branch, short, drop_path, f"stages[{index}] block {b}"), cout


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """Mobile stage `index`: its blocks, then its pool."""
    return common.stage(point, index, cin, rates, block)
