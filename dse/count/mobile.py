"""Mobile stages (depthwise-separable and inverted-residual blocks) as ops, and their analytic counts.

dwsep: per kernel k of the stage, depthwise k x k -> norm -> act -> pointwise 1x1 to `width` -> norm -> act
(MobileNet-v1). inverted: 1x1 expand to round(cin x expansion) (left out at expansion 1), depthwise k x k,
1x1 project without act (MobileNet-v2). The stride sits on the block's first depthwise conv.

Shortcuts by `point.skip`:
  none        no shortcut (dwsep keeps the act after its last pointwise conv: MobileNet-v1)
  identity    identity where stride 1 and cin == cout, no shortcut elsewhere (MobileNet-v2 convention)
  projection  identity where the shape stays, 1x1 conv + norm where it changes (Xception-like dwsep)
With a shortcut (identity or projection) the block is linear at its end: no act after the last
pointwise conv and none after the add. Attention se/eca/cbam sits after the (last) depthwise act;
sk/splat are not supported. Blocks are dse.count.residual.Block descriptions, counted and built by the
residual family's code.
"""
from __future__ import annotations

from dse.count.layers import Count, pool
from dse.count.plain import Op, conv_norm_act
from dse.count.residual import Block, count_block
from dse.errors import UserError
from dse.point import Point

ATTENTIONS = ("none", "se", "eca", "cbam")


def check(point: Point, index: int) -> None:
    """Raise UserError for padding or attention that mobile blocks do not support."""
    stage = point.stages[index]
    if stage.padding != "same":
        raise UserError(f"stages[{index}].padding: {stage.block} blocks need 'same' padding, got {stage.padding!r}")
    if point.attention not in ATTENTIONS:
        raise UserError(f"attention: attention {point.attention!r} is not supported for block {stage.block!r}; "
                        f"supported: {', '.join(ATTENTIONS)}")


def expanded(point: Point, cin: int) -> int:
    """The inverted block's expanded width: round(cin x expansion)."""
    return int(round(cin * point.expansion))


def _depthwise(c: int, kernel: int, stride: int) -> list[Op]:
    return conv_norm_act(c, c, kernel, stride, groups=c)


def _branch(point: Point, index: int, cin: int, stride: int, linear: bool) -> list[Op]:
    """The block's convs; `linear` drops the act after the last pointwise conv (dwsep; inverted always is)."""
    stage = point.stages[index]
    cout, ks = stage.width, stage.kernels
    drop = [Op("dropout", 0, 0)] if point.dropout > 0 else []
    if stage.block == "dwsep":
        ops, c = [], cin
        for j, k in enumerate(ks):
            last = j == len(ks) - 1
            ops += _depthwise(c, k, stride if j == 0 else 1)
            if last and point.attention != "none":
                ops.append(Op(point.attention, c, c))
            ops += (drop if last else []) + conv_norm_act(c, cout, 1, apply_act=not (linear and last))
            c = cout
        return ops
    mid = expanded(point, cin)
    ops = conv_norm_act(cin, mid, 1) if point.expansion != 1 else []
    for j, k in enumerate(ks):
        ops += _depthwise(mid, k, stride if j == 0 else 1)
    if point.attention != "none":
        ops.append(Op(point.attention, mid, mid))
    return ops + drop + conv_norm_act(mid, cout, 1, apply_act=False)


def block(point: Point, index: int, b: int, cin: int) -> Block:
    """Block `b` of stage `index`, fed with `cin` channels."""
    check(point, index)
    stage = point.stages[index]
    stride, cout = stage.stride if b == 0 else 1, stage.width
    same = stride == 1 and cin == cout
    short: list[Op] = []
    if point.skip == "none" or (point.skip == "identity" and not same):
        shortcut = "none"
    elif same:
        shortcut = "identity"
    else:
        shortcut = "projection"
        short = [Op("conv", cin, cout, 1, stride), Op("norm", cout, cout)]
    branch = _branch(point, index, cin, stride, linear=point.skip != "none")
    return Block((), tuple(branch), shortcut, tuple(short), False, (), cin, cout, stride)


def stage(point: Point, index: int, cin: int, h: int, w: int, first_block: int) -> Count:
    """Count mobile stage `index` (its blocks, then its pool)."""
    total = Count(0, 0, cin, h, w)
    for b in range(point.stages[index].depth):
        blk = block(point, index, b, total.c)
        total = total.then(count_block(point, blk, total.h, total.w, f"stages[{index}] block {b}"))
    return total.then(pool(point.stages[index].pool, total.c, total.h, total.w))
