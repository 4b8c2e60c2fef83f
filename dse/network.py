"""A Point as an nn.Module: its family's graph, read by the building interpreter (timm layers)."""
from __future__ import annotations

from dse.families import net
from dse.graph.build import Network, build as build_graph
from dse.point import Point


def build(point: Point, num_classes: int | None = None, in_chans: int | None = None,
          image_size: int | None = None) -> Network:
    """Build `point` as an nn.Module (geometry defaults to the point's own)."""
    return build_graph(net(point, image_size, in_chans, num_classes))
