"""The building interpreter: a graph (dse.graph.nodes) as an nn.Module, from timm layers where timm has them."""
from __future__ import annotations

from functools import partial, singledispatch

import torch
import torch.nn.functional as F
from timm.layers import DropPath as TimmDropPath
from timm.layers import LayerNorm2d, SelectiveKernel, SplitAttn, create_act_layer, create_attn, get_act_layer
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn

from dse.channels import SPLAT_RADIX
from dse.graph.attention import SK_DIVISOR
from dse.graph.nodes import (Act, Add, Attention, Concat, Conv, Dropout, DropPath, Flatten, GlobalPool, LayerScale,
                             Linear, Net, Norm, Pool, Seq, Shuffle, Slice, Subsample)


class Sum(nn.Module):
    """The sum of its branches (a residual block: branch, then shortcut)."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class Cat(nn.Module):
    """Its branches' outputs concatenated along channels."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class ChannelShuffle(nn.Module):
    """Interleave `groups` channel groups (ShuffleNet)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ChannelSlice(nn.Module):
    """Channels [start, stop)."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start:self.stop]


class PadShortcut(nn.Module):
    """He et al. option A: subsample by the stride and zero-pad the new channels (no params)."""

    def __init__(self, stride: int, cout: int):
        super().__init__()
        self.stride, self.cout = stride, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        if self.cout > x.shape[1]:
            return F.pad(x, (0, 0, 0, 0, 0, self.cout - x.shape[1]))
        return x[:, :self.cout]


class Scale(nn.Module):
    """A learned per-channel scale (ConvNeXt's layer scale)."""

    def __init__(self, c: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((c,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm over channels of a feature map (N, C, H, W) or of pooled features (N, C)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")


class LayerNorm(LayerNorm2d):
    """LayerNorm over channels of a feature map (N, C, H, W) or of pooled features (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return super().forward(x)


class Network(nn.Module):
    """A built graph: `features` up to the last feature map, then `head`."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.head = features, head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@singledispatch
def module(node) -> nn.Module:
    """The nn.Module for `node` (one function per node type)."""
    raise TypeError(f"no build rule for {type(node).__name__}")


@module.register
def _(node: Conv):
    return nn.Conv2d(node.cin, node.cout, node.kernel, node.stride, node.pad, node.dilation, node.groups, node.bias)


@module.register
def _(node: Norm):
    return {"bn": lambda: BatchNorm(node.c), "ln": lambda: LayerNorm(node.c, eps=1e-6),
            "none": nn.Identity}[node.kind]()


@module.register
def _(node: Act):
    return get_act_layer(node.name)()


@module.register
def _(node: Pool):
    cls = nn.MaxPool2d if node.kind == "max" else nn.AvgPool2d
    return cls(node.kernel, node.stride, node.padding)


@module.register
def _(node: GlobalPool):
    cls = nn.AdaptiveMaxPool2d if node.kind == "max" else nn.AdaptiveAvgPool2d
    return nn.Sequential(cls(node.size), nn.Flatten())


@module.register
def _(node: Flatten):
    return nn.Flatten()


@module.register
def _(node: Linear):
    return nn.Linear(node.cin, node.cout, node.bias)


@module.register
def _(node: Dropout):
    return nn.Dropout(node.p)


@module.register
def _(node: DropPath):
    return TimmDropPath(node.p)


@module.register
def _(node: LayerScale):
    return Scale(node.c, node.init)


@module.register
def _(node: Shuffle):
    return ChannelShuffle(node.groups)


@module.register
def _(node: Slice):
    return ChannelSlice(node.start, node.stop)


@module.register
def _(node: Subsample):
    return PadShortcut(node.stride, node.cout)


@module.register
def _(node: Attention):
    act = partial(create_act_layer, node.act)  # a timm act-layer factory that accepts `inplace`
    if node.kind == "sk":
        return SelectiveKernel(node.cin, node.cout, kernel_size=[node.kernel, node.kernel + 2], stride=node.stride,
                               groups=node.groups, rd_ratio=node.ratio, rd_divisor=SK_DIVISOR, keep_3x3=True,
                               split_input=True, act_layer=act, norm_layer=nn.BatchNorm2d)
    if node.kind == "splat":
        return SplitAttn(node.cin, node.cout, kernel_size=node.kernel, stride=node.stride, groups=node.groups,
                         radix=SPLAT_RADIX, rd_ratio=node.ratio, act_layer=act, norm_layer=nn.BatchNorm2d)
    if node.kind == "se_mb":
        return SqueezeExcite(node.cout, rd_channels=node.rd, act_layer=get_act_layer(node.act))
    if node.kind == "eca":
        return create_attn("eca", node.cout)
    return create_attn(node.kind, node.cout, rd_ratio=node.ratio)


@module.register
def _(node: Seq):
    return nn.Sequential(*(module(n) for n in node.nodes)) if node.nodes else nn.Identity()


@module.register
def _(node: Add):
    return Sum([module(b) for b in node.branches])


@module.register
def _(node: Concat):
    return Cat([module(b) for b in node.branches])


def build(net: Net) -> Network:
    """The graph as a module."""
    return Network(module(net.features), module(net.head))
