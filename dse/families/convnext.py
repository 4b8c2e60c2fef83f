"""ConvNeXt stages (Liu et al., CVPR 2022): a patchify stem, then blocks of 7x7 depthwise conv, norm, 1x1 expand,
act, 1x1 project, layer scale and drop-path, around an identity shortcut.

A stage with stride s > 1 starts with norm + an s x s / s conv to its width (ConvNeXt's downsampling layer).
Every conv carries a bias, as in the paper (its 1x1 convs are linear layers over channels). The expansion is
the stage's (`Stage.expansion`) or the point's; the depthwise kernel is the stage's `kernels[0]`. A stage's
`pool` runs after its blocks, as in every family (the paper's nets have none): Point.vanishes counts it, so the
network must have it.
"""
from __future__ import annotations

from dse.families.common import blocks, norm, pool
from dse.graph.nodes import Act, Add, Conv, DropPath, LayerScale, Seq, seq
from dse.point import Point


def block(point: Point, index: int, b: int, c: int, stride: int, drop_path: float) -> tuple[Add, int]:
    """Block `b` on c channels, x + drop_path(scale(pw2(act(pw1(norm(dw(x))))))), and its width c; the stride sits
    on the stage's downsampling layer, before the blocks."""
    stage = point.stages[index]
    k, mid = stage.kernels[0], int(round(c * (stage.expansion or point.expansion)))
    branch = seq(Conv(c, c, k, groups=c, bias=True), norm(point, c), Conv(c, mid, 1, bias=True), Act(point.act),
                 Conv(mid, c, 1, bias=True), LayerScale(c, point.layer_scale) if point.layer_scale > 0 else None,
                 DropPath(drop_path) if drop_path > 0 else None)
    return Add((branch, Seq()), f"stages[{index}] block"), c


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """ConvNeXt stage `index`: [norm + s x s / s conv when it downsamples or widens], its blocks, then its pool."""
    spec = point.stages[index]
    nodes: list = []
    if spec.stride > 1 or cin != spec.width:
        nodes += norm(point, cin) + [Conv(cin, spec.width, spec.stride, spec.stride, 0, bias=True)]
    body, c = blocks(point, index, spec.width, rates, block)
    return Seq(tuple(nodes + body + pool(spec.pool))), c
