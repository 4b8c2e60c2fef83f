"""The network: stem -> stages -> head, each stage made by the builder for its block type."""
from __future__ import annotations

import torch
from torch import nn

from dse.arch import layers
from dse.arch.blocks import BLOCKS
from dse.count import stem as count_stem
from dse.count.blocks import BLOCKS as COUNTS
from dse.errors import choose
from dse.point import Point


class Net(nn.Module):
    """A built Point. `forward_features` stops before the head."""

    def __init__(self, point: Point, image_size: int, in_chans: int, num_classes: int):
        super().__init__()
        self.point = point
        self.stem, c = layers.stem(point, in_chans)
        shape = count_stem(point, in_chans, image_size, image_size)
        rates = point.drop_path_rates()
        stages, first = [], 0
        for i, stage in enumerate(point.stages):
            build_stage = choose("block", stage.block, BLOCKS)
            module, c = build_stage(point, i, c, rates[first:first + stage.depth])
            stages.append(module)
            shape = shape.then(COUNTS[stage.block](point, i, shape.c, shape.h, shape.w, first))
            first += stage.depth
        self.stages = nn.Sequential(*stages)
        hd = point.head
        flat = {"avg": c, "max": c, "adaptive": c * hd.pool_size ** 2, "flatten": c * shape.h * shape.w}[hd.pool]
        self.head = layers.Head(point, c, flat, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build(point: Point, num_classes: int | None = None, in_chans: int | None = None,
          image_size: int | None = None) -> Net:
    """Build `point` as an nn.Module (geometry defaults to the point's own)."""
    return Net(point, image_size or point.image_size, in_chans or point.in_chans, num_classes or point.num_classes)
