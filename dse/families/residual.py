"""Residual blocks: basic, bottleneck (ResNet, ResNeXt, WRN) and their pre-activation forms.

out = act(branch(x) + shortcut(x)); pre-activation: out = branch(norm-act(x)) + shortcut(norm-act(x) when the
shape changes, else x). se/eca/cbam follow the branch; sk and splat replace its first k x k conv-norm-act.
"""
from __future__ import annotations

from dse.families import common
from dse.families.common import conv, conv_norm_act, norm_act, residual, shortcut
from dse.graph.attention import SPATIAL
from dse.graph.nodes import Act, Add, Attention, Conv, Dropout, Norm, Seq, seq
from dse.point import Point


def _branch(point: Point, index: int, cin: int, stride: int) -> list:
    """The residual branch without attention: convs per block type, dropout between convs."""
    stage = point.stages[index]
    cout, mid, g = stage.width, point.mid_widths()[index], point.cardinality
    drop = [Dropout(point.dropout)] if point.dropout > 0 else []
    ks = stage.kernels
    nodes: list = []
    if stage.block == "basic":
        for j, k in enumerate(ks):
            nodes += (drop if j else []) + conv_norm_act(point, cin if j == 0 else cout, cout, k,
                                                         stride if j == 0 else 1, act=j < len(ks) - 1)
    elif stage.block == "bottleneck":
        nodes = conv_norm_act(point, cin, mid, 1)
        for j, k in enumerate(ks):
            nodes += drop + conv_norm_act(point, mid, mid, k, stride if j == 0 else 1, g)
        nodes += drop + conv_norm_act(point, mid, cout, 1, act=False)
    elif stage.block == "preact_basic":
        for j, k in enumerate(ks):
            c = cin if j == 0 else cout
            nodes += (norm_act(point, c) + drop if j else []) + [conv(point, c, cout, k, stride if j == 0 else 1)]
    else:  # preact_bottleneck
        nodes = [conv(point, cin, mid, 1)]
        for j, k in enumerate(ks):
            nodes += norm_act(point, mid) + drop + [conv(point, mid, mid, k, stride if j == 0 else 1, g)]
        nodes += norm_act(point, mid) + drop + [conv(point, mid, cout, 1)]
    return nodes


def _replace_spatial(point: Point, nodes: list) -> list:
    """Swap the first k x k conv (k > 1) and the norm/act right after it for an sk or splat module."""
    for i, node in enumerate(nodes):
        if isinstance(node, Conv) and node.kernel > 1:
            end = i + 1
            for kind in (Norm, Act):
                if end < len(nodes) and isinstance(nodes[end], kind):
                    end += 1
            att = Attention(point.attention, node.cin, node.cout, node.kernel, node.stride, node.groups,
                            point.attn_ratio, point.act)
            return nodes[:i] + [att] + nodes[end:]
    return nodes


def block(point: Point, index: int, b: int, cin: int, stride: int, drop_path: float) -> tuple[Add | Seq, int]:
    """Block `b` of stage `index`, fed with `cin` channels, and its output width."""
    stage = point.stages[index]
    cout = stage.width
    preact = stage.block.startswith("preact")
    branch = _branch(point, index, cin, stride)
    if point.attention in SPATIAL:
        branch = _replace_spatial(point, branch)
    elif point.attention != "none":
        branch.append(Attention(point.attention, cout, cout, ratio=point.attn_ratio, act=point.act))
    short = shortcut(point, cin, cout, stride, with_norm=not preact)
    label = f"stages[{index}] block {b}"
    if not preact:
        return seq(residual(branch, short, drop_path, label), Act(point.act)), cout
    pre = norm_act(point, cin)
    if short:  # the shape changes: both paths start after the pre-activation
        return seq(pre, residual(branch, short, drop_path, label)), cout
    if short is None:
        return seq(pre, branch), cout
    return residual(pre + branch, short, drop_path, label), cout


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """Residual stage `index`: its blocks, then its pool."""
    return common.stage(point, index, cin, rates, block)

