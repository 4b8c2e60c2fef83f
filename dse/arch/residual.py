"""Residual stages (basic, bottleneck, pre-activation basic/bottleneck) built from dse.count.residual's ops."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath

from dse.arch import layers
from dse.arch.plain import sequential
from dse.count.residual import block


class PadShortcut(nn.Module):
    """He et al. option A: subsample by the stride and zero-pad the new channels (no params)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        if self.cout > self.cin:
            return F.pad(x, (0, 0, 0, 0, 0, self.cout - self.cin))
        return x[:, :self.cout]


class Residual(nn.Module):
    """out = post(drop_path(branch(pre(x))) + shortcut(pre(x) or x)); no add when the skip is none."""

    def __init__(self, point, spec, drop_path: float):
        super().__init__()
        self.pre = sequential(point, spec.pre)
        self.branch = sequential(point, spec.branch)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.shortcut = {
            "none": lambda: None,
            "identity": nn.Identity,
            "pad": lambda: PadShortcut(spec.cin, spec.cout, spec.stride),
            "projection": lambda: sequential(point, spec.short),
        }[spec.shortcut]()
        self.from_pre = spec.from_pre
        self.post = sequential(point, spec.post)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pre(x)
        out = self.branch(y)
        if self.shortcut is not None:
            out = self.drop_path(out) + self.shortcut(y if self.from_pre else x)
        return self.post(out)


def stage(point, index, cin, rates):
    """Build residual stage `index`: its blocks, then its pool."""
    blocks, c = [], cin
    for b in range(point.stages[index].depth):
        spec = block(point, index, b, c)
        blocks.append(Residual(point, spec, rates[b]))
        c = spec.cout
    blocks.append(layers.POOLS[point.stages[index].pool]())
    return nn.Sequential(*blocks), c
