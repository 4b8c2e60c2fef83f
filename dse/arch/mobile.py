"""Mobile stages (depthwise-separable, inverted residual) built from dse.count.mobile's block descriptions."""
from __future__ import annotations

from torch import nn

from dse.arch import layers
from dse.arch.residual import Residual
from dse.count.mobile import block


def stage(point, index, cin, rates):
    """Build mobile stage `index`: its blocks (with drop-path on their shortcuts), then its pool."""
    blocks, c = [], cin
    for b in range(point.stages[index].depth):
        spec = block(point, index, b, c)
        blocks.append(Residual(point, spec, rates[b]))
        c = spec.cout
    blocks.append(layers.POOLS[point.stages[index].pool]())
    return nn.Sequential(*blocks), c
