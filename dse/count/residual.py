"""Residual blocks (basic, bottleneck, pre-activation basic/bottleneck) as ops, and their analytic counts.

`block(point, index, b, cin)` describes block `b` of stage `index` once; dse.arch.residual builds the
same description, so count and module cannot drift apart.
"""
from __future__ import annotations

from typing import NamedTuple

from dse.count import attention
from dse.count.layers import Count, pool
from dse.count.plain import Op, conv_norm_act, count_ops
from dse.errors import UserError
from dse.point import Point


class Block(NamedTuple):
    """out = post(branch(pre(x)) + shortcut(pre(x) if from_pre else x)).

    shortcut: none (no add), identity (same shape), pad (He et al. option A: subsample, zero-pad
    channels) or projection (the ops in `short`: 1x1 conv [+ norm]).
    """

    pre: tuple[Op, ...]
    branch: tuple[Op, ...]
    shortcut: str
    short: tuple[Op, ...]
    from_pre: bool
    post: tuple[Op, ...]
    cin: int
    cout: int
    stride: int


def _norm_act(c: int) -> list[Op]:
    return [Op("norm", c, c), Op("act", c, c)]


def _branch(point: Point, index: int, cin: int, stride: int) -> list[Op]:
    """The residual branch without attention: convs per block type, dropout between convs."""
    stage = point.stages[index]
    cout, mid, g = stage.width, point.mid_widths()[index], point.cardinality
    drop = [Op("dropout", 0, 0)] if point.dropout > 0 else []
    ks = stage.kernels
    ops: list[Op] = []
    if stage.block == "basic":
        for j, k in enumerate(ks):
            ops += (drop if j else []) + conv_norm_act(cin if j == 0 else cout, cout, k, stride if j == 0 else 1,
                                                       apply_act=j < len(ks) - 1)
    elif stage.block == "bottleneck":
        ops = conv_norm_act(cin, mid, 1)
        for j, k in enumerate(ks):
            ops += drop + conv_norm_act(mid, mid, k, stride if j == 0 else 1, g)
        ops += drop + conv_norm_act(mid, cout, 1, apply_act=False)
    elif stage.block == "preact_basic":
        for j, k in enumerate(ks):
            c = cin if j == 0 else cout
            ops += (_norm_act(c) + drop if j else []) + [Op("conv", c, cout, k, stride if j == 0 else 1)]
    else:  # preact_bottleneck
        ops = [Op("conv", cin, mid, 1)]
        for j, k in enumerate(ks):
            ops += _norm_act(mid) + drop + [Op("conv", mid, mid, k, stride if j == 0 else 1, g)]
        ops += _norm_act(mid) + drop + [Op("conv", mid, cout, 1)]
    return ops


def _replace_spatial(ops: list[Op], kind: str) -> list[Op]:
    """Swap the first k x k conv (k > 1) and the norm/act right after it for an sk or splat op."""
    for i, op in enumerate(ops):
        if op.kind == "conv" and op.kernel > 1:
            end = i + 1
            for follow in ("norm", "act"):
                if end < len(ops) and ops[end].kind == follow:
                    end += 1
            return ops[:i] + [Op(kind, op.cin, op.cout, op.kernel, op.stride, op.groups)] + ops[end:]
    return ops


def block(point: Point, index: int, b: int, cin: int) -> Block:
    """Block `b` of stage `index`, fed with `cin` channels."""
    stage = point.stages[index]
    if stage.padding != "same":
        raise UserError(f"stages[{index}].padding: residual blocks need 'same' padding, got {stage.padding!r}")
    stride = stage.stride if b == 0 else 1
    cout = stage.width
    preact = stage.block.startswith("preact")
    branch = _branch(point, index, cin, stride)
    if point.attention in attention.SPATIAL:
        branch = _replace_spatial(branch, point.attention)
    elif point.attention != "none":
        branch.append(Op(point.attention, cout, cout))
    same = stride == 1 and cin == cout
    short: list[Op] = []
    if point.skip == "none":
        shortcut = "none"
    elif same:
        shortcut = "identity"
    elif point.skip == "identity":
        shortcut = "pad"
    else:
        shortcut = "projection"
        short = [Op("conv", cin, cout, 1, stride)] + ([] if preact else [Op("norm", cout, cout)])
    pre = _norm_act(cin) if preact else []
    post = [] if preact else [Op("act", cout, cout)]
    return Block(tuple(pre), tuple(branch), shortcut, tuple(short), preact and not same, tuple(post), cin, cout,
                 stride)


def count_block(point: Point, blk: Block, h: int, w: int, where: str) -> Count:
    """Params and MACs of one block on a cin x h x w input."""
    pre = count_ops(point, blk.pre, blk.cin, h, w)
    branch = count_ops(point, blk.branch, blk.cin, h, w)
    if blk.shortcut == "pad":
        short = Count(0, 0, blk.cout, -(-h // blk.stride), -(-w // blk.stride))
    else:
        short = count_ops(point, blk.short, blk.cin, h, w)
    if blk.shortcut != "none" and short[2:] != branch[2:]:
        raise UserError(f"{where}: the shortcut gives {tuple(short[2:])} but the branch {tuple(branch[2:])}; "
                        "residual blocks need odd kernels and matching strides")
    return Count(pre.params + branch.params + short.params, pre.macs + branch.macs + short.macs, *branch[2:])


def stage(point: Point, index: int, cin: int, h: int, w: int, first_block: int) -> Count:
    """Count residual stage `index` (its blocks, then its pool)."""
    total = Count(0, 0, cin, h, w)
    for b in range(point.stages[index].depth):
        blk = block(point, index, b, total.c)
        total = total.then(count_block(point, blk, total.h, total.w, f"stages[{index}] block {b}"))
    return total.then(pool(point.stages[index].pool, total.c, total.h, total.w))
