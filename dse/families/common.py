"""Pieces every family shares, written once: conv-norm-act, named pools, the stem, the head, shortcuts, and the
stage loop that repeats a family's block."""
from __future__ import annotations

from typing import Callable

from dse.graph.nodes import (Act, Add, Concat, Conv, Dropout, DropPath, Flatten, GlobalPool, Linear, Norm, Pool, Seq,
                             Subsample, seq)
from dse.point import POOL_WINDOWS, PREACT, Point


def pool(name: str) -> list:
    """The named pool (dse.point.POOLS) as a node list (empty for none)."""
    geo = POOL_WINDOWS[name]
    return [] if geo is None else [Pool(*geo)]


def norm(point: Point, c: int) -> list:
    """The point's norm on c channels (none: no node; convs then carry a bias)."""
    return [] if point.norm == "none" else [Norm(c, point.norm)]


def conv(point: Point, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
         padding: int = -1) -> Conv:
    """A conv with a bias only when the point has no norm layers."""
    return Conv(cin, cout, kernel, stride, padding, groups, bias=point.norm == "none")


def conv_norm_act(point: Point, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                  padding: int = -1, act: bool = True) -> list:
    """conv -> norm (-> act)."""
    return [conv(point, cin, cout, kernel, stride, groups, padding), *norm(point, cout)] + \
        ([Act(point.act)] if act else [])


def norm_act(point: Point, c: int) -> list:
    """norm -> act (pre-activation)."""
    return [*norm(point, c), Act(point.act)]


def stem(point: Point, in_chans: int) -> tuple[Seq, int]:
    """The stem (conv [-norm-act], or a patchify conv with a norm) and its pool; its output width."""
    s = point.stem
    if s.type == "none":
        return seq(pool(s.pool)), in_chans
    pad = s.kernel // 2 if s.padding < 0 else s.padding
    if s.type == "patch":  # ConvNeXt: non-overlapping k x k patches, biased conv, then a norm
        return seq(Conv(in_chans, s.width, s.kernel, s.stride, pad, bias=True), norm(point, s.width)), s.width
    first = conv(point, in_chans, s.width, s.kernel, s.stride, padding=pad)
    rest = [*norm(point, s.width), Act(point.act)] if s.type == "conv" else []
    return seq(first, rest, pool(s.pool)), s.width


def head(point: Point, c: int, h: int, w: int, num_classes: int) -> Seq:
    """Final norm-act (pre-activation nets), a 1x1 conv (EfficientNet, ShuffleNet), pooling, hidden fc layers,
    a norm after pooling (ConvNeXt), dropout and the classifier."""
    hd = point.head
    nodes = norm_act(point, c) if point.stages[-1].block in PREACT else []
    if hd.conv:
        nodes += conv_norm_act(point, c, hd.conv, 1)
        c = hd.conv
    if hd.type == "conv":  # NIN: dropout, a 1x1 conv to the classes, global average
        return seq(nodes, Dropout(hd.dropout), Conv(c, num_classes, 1, bias=True), GlobalPool("avg"))
    if hd.pool == "flatten":
        nodes.append(Flatten())
        flat = c * h * w
    else:
        size = hd.pool_size if hd.pool == "adaptive" else 1
        nodes.append(GlobalPool("max" if hd.pool == "max" else "avg", size))
        flat = c * size ** 2
    if hd.norm:
        nodes.append(Norm(flat, point.norm))
    for width in hd.hidden:
        nodes += [Dropout(hd.dropout), Linear(flat, width), Act(point.act)]
        flat = width
    return seq(nodes, Dropout(hd.dropout), Linear(flat, num_classes))


def residual(branch: list, shortcut: list | None, drop_path: float, label: str) -> Add | Seq:
    """branch + shortcut (identity when `shortcut` is []), drop-path on the branch; no add when shortcut is None."""
    if shortcut is None:
        return seq(branch)
    return Add((seq(branch, DropPath(drop_path) if drop_path > 0 else None), seq(shortcut)), label)


def shortcut(point: Point, cin: int, cout: int, stride: int, with_norm: bool = True) -> list | None:
    """The skip by `point.skip`: None (no add), [] (identity), option A (subsample + zero channels), or a 1x1
    projection (+ norm) where the shape changes."""
    if point.skip == "none":
        return None
    if stride == 1 and cin == cout:
        return []
    if point.skip == "identity":
        return [Subsample(stride, cout)]
    return [conv(point, cin, cout, 1, stride)] + (norm(point, cout) if with_norm else [])


# A family's block: block(point, index, b, cin, stride, drop_path) -> (node, cout) makes block b of stage `index`.
Block = Callable[[Point, int, int, int, int, float], tuple[Seq | Add | Concat, int]]


def blocks(point: Point, index: int, cin: int, rates: list[float], block: Block) -> tuple[list, int]:
    """Stage `index`'s blocks and their output width, as pycls's AnyStage loops: the first block takes the stage's
    input and stride, each later one the previous block's output at stride 1; block b gets drop-path rates[b]."""
    spec, nodes, c = point.stages[index], [], cin
    for b in range(spec.depth):
        node, c = block(point, index, b, c, spec.stride if b == 0 else 1, rates[b])
        nodes.append(node)
    return nodes, c


def stage(point: Point, index: int, cin: int, rates: list[float], block: Block) -> tuple[Seq, int]:
    """Stage `index`: its blocks, then its pool."""
    nodes, c = blocks(point, index, cin, rates, block)
    return Seq(tuple(nodes + pool(point.stages[index].pool))), c
