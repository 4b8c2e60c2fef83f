"""Families turn a Point into its graph (dse.graph.nodes); they never count or build.

A block type's rule (dse.point.BLOCK_RULES, where its name is registered) names its family: the module here
whose stage(point, index, cin, drop_path_rates) -> (Seq, cout) makes one stage. `net(point)` adds the shared
stem and head. Interpreters (dse.graph.count, dse.graph.build) read the result.
"""
from __future__ import annotations

from types import ModuleType

from dse.families import common, convnext, dense, efficientnet, inception, mobile, plain, regnet, residual, shufflenet
from dse.graph.count import features as _features
from dse.graph.nodes import Net, Seq
from dse.point import BLOCK_RULES, Point

FAMILIES: dict[str, ModuleType] = {module.__name__.rpartition(".")[2]: module for module in
                                   (convnext, dense, efficientnet, inception, mobile, plain, regnet, residual,
                                    shufflenet)}


def net(point: Point, image_size: int | None = None, in_chans: int | None = None,
        num_classes: int | None = None) -> Net:
    """The graph of `point` at the given geometry (default: the point's own)."""
    size, chans = image_size or point.image_size, in_chans or point.in_chans
    stem, c = common.stem(point, chans)
    parts, first, rates = [stem], 0, point.drop_path_rates()
    for i, stage in enumerate(point.stages):
        family = FAMILIES[BLOCK_RULES[stage.block].family]
        part, c = family.stage(point, i, c, rates[first:first + stage.depth])
        parts.append(part)
        first += stage.depth
    features = Seq(tuple(parts))
    shape = _features(Net(chans, size, features, Seq()))
    return Net(chans, size, features, common.head(point, c, shape.h, shape.w, num_classes or point.num_classes))
