"""What a Point costs, from its graph and without torch: params, multiply-add FLOPs, activations, receptive field.

FLOPs here are multiply-adds of conv and linear layers (the ResNet/ResNeXt papers' and torchvision's
convention), which equals `FlopCounterMode` total / 2 on one forward pass.
"""
from __future__ import annotations

from typing import NamedTuple

from dse.families import net
from dse.graph.count import Measures, measure
from dse.point import Point


class Complexity(NamedTuple):
    """Parameter count and multiply-add FLOPs of one forward pass of one image."""

    params: int
    flops: int


def measures(point: Point, image_size: int | None = None, in_chans: int | None = None,
             num_classes: int | None = None) -> Measures:
    """Params, FLOPs, activations and receptive field (size, stride) at the given geometry (default: the point's)."""
    return measure(net(point, image_size, in_chans, num_classes))


def complexity(point: Point, image_size: int | None = None, in_chans: int | None = None,
               num_classes: int | None = None) -> Complexity:
    """Exact (params, multiply-add FLOPs) of `point` at the given geometry (default: the point's own)."""
    m = measures(point, image_size, in_chans, num_classes)
    return Complexity(m.params, m.flops)
