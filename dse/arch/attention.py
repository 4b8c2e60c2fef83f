"""Attention modules from timm: se/eca/cbam on a block's output, sk/splat in place of its k x k conv.

Their analytic twins (with timm's channel rounding) are in dse/count/attention.py.
"""
from __future__ import annotations

from functools import partial

from torch import nn
from timm.layers import SelectiveKernel, SplitAttn, create_act_layer, create_attn

from dse.count.attention import SK_DIVISOR, SPLAT_RADIX


def _act_layer(point):
    """A timm act-layer factory for the point's activation that accepts `inplace`."""
    return partial(create_act_layer, point.act)


def build(point, op) -> nn.Module:
    """The timm module for the attention op `op` (a dse.count.plain.Op)."""
    if op.kind == "sk":
        return SelectiveKernel(op.cin, op.cout, kernel_size=[op.kernel, op.kernel + 2], stride=op.stride,
                               groups=op.groups, rd_ratio=point.attn_ratio, rd_divisor=SK_DIVISOR, keep_3x3=True,
                               split_input=True, act_layer=_act_layer(point), norm_layer=nn.BatchNorm2d)
    if op.kind == "splat":
        return SplitAttn(op.cin, op.cout, kernel_size=op.kernel, stride=op.stride, groups=op.groups,
                         radix=SPLAT_RADIX, rd_ratio=point.attn_ratio, act_layer=_act_layer(point),
                         norm_layer=nn.BatchNorm2d)
    if op.kind == "eca":
        return create_attn("eca", op.cout)
    return create_attn(op.kind, op.cout, rd_ratio=point.attn_ratio)
