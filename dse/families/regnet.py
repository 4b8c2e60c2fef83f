"""RegNet stages (Radosavovic et al., CVPR 2020), block 'regnet': X without SE, Y with it.

A block is 1x1 conv to w x b, 3x3 conv (the stage's one kernel) in groups of `group_width` channels (stride on the
first block), [SE whose reduced width is round(block input x 0.25), placed after the 3x3 conv], 1x1 conv to w
without act; a 1x1 conv + norm shortcut where the shape changes; act after the add. `stage_widths` is the paper's
quantized-linear width rule, computed as timm and pycls do.
"""
from __future__ import annotations

import math

from dse.errors import UserError
from dse.families import common
from dse.families.common import conv_norm_act, residual, shortcut
from dse.graph.nodes import Act, Attention, Seq, seq
from dse.point import Point

SE_RATIO = 0.25  # of the block's input width (RegNetY)
MAX_DEPTH, MAX_WIDTH = 128, 1 << 16  # bounds on the rule's inputs: a space file cannot make it run long


def _f32(x: float) -> float:
    """x rounded to float32, as timm's generator computes in float32 tensors."""
    import struct

    return struct.unpack("f", struct.pack("f", x))[0]


def stage_widths(w0: float, wa: float, wm: float, depth: int, group_width: int, b: float = 1.0,
                 q: int = 8) -> tuple[list[int], list[int]]:
    """(stage widths, stage depths) of the quantized-linear rule u_j = w0 + wa * j, quantized to w0 * wm^k,
    with widths then made compatible with the group width (timm's generate_regnet and
    adjust_widths_groups_comp)."""
    if not (0 < depth <= MAX_DEPTH and 0 < w0 <= MAX_WIDTH and 0 <= wa <= MAX_WIDTH and 1 < wm <= 16
            and 0 < group_width <= MAX_WIDTH and b > 0 and w0 % q == 0):
        raise UserError(f"regnet: needs 0 < depth <= {MAX_DEPTH}, w0 a positive multiple of {q}, wa >= 0, "
                        f"1 < wm <= 16, group_width > 0 and b > 0; got w0={w0}, wa={wa}, wm={wm}, depth={depth}, "
                        f"group_width={group_width}, b={b}")
    log_wm = _f32(math.log(wm))
    widths = []
    for j in range(depth):
        cont = _f32(_f32(j * _f32(wa)) + w0)
        exp = round(_f32(_f32(math.log(_f32(cont / w0))) / log_wm))
        widths.append(int(round(_f32(w0 * _f32(_f32(wm) ** exp)) / q) * q))
    uniq = sorted(set(widths))
    depths = [widths.count(w) for w in uniq]
    out = []
    for w in uniq:
        w_bot = int(w * b)
        g = min(group_width, w_bot)
        out.append(int(int(round(w_bot / g) * g) / b))
    return out, depths


def block(point: Point, index: int, i: int, cin: int, stride: int, drop_path: float) -> tuple[Seq, int]:
    """Block `i` of stage `index`, fed with `cin` channels, and its output width."""
    stage = point.stages[index]
    mid = int(round(stage.width * point.bottleneck_ratio))
    g = min(point.group_width, mid)  # Point.check holds that g divides mid
    branch = conv_norm_act(point, cin, mid, 1) + conv_norm_act(point, mid, mid, stage.kernels[0], stride, mid // g)
    if point.attention == "se":
        branch.append(Attention("se_mb", mid, mid, act=point.act, rd=int(round(cin * SE_RATIO))))
    branch += conv_norm_act(point, mid, stage.width, 1, act=False)
    short = shortcut(point, cin, stage.width, stride)
    return seq(residual(branch, short, drop_path, f"stages[{index}] block {i}"), Act(point.act)), stage.width


def stage(point: Point, index: int, cin: int, rates: list[float]) -> tuple[Seq, int]:
    """RegNet stage `index`: its blocks, then its pool."""
    return common.stage(point, index, cin, rates, block)
