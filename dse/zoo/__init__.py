"""Named reference points: a table of Points, merged from one table per family.

`get(name)` returns the Point (with its default geometry: CIFAR points 32 px / 10 classes, ImageNet
points 224 px / 1000 classes); `names()` lists them. Unknown names list the valid ones.
"""
from __future__ import annotations

from dse.errors import UserError
from dse.point import Point
from dse.zoo import convnext, dense, efficientnet, inception, mobile, plain, regnet, residual, shufflenet


def _tables() -> dict[str, Point]:
    merged: dict[str, Point] = {}
    for table in (plain.POINTS, residual.POINTS, dense.POINTS, inception.POINTS, mobile.POINTS, regnet.POINTS,
                  efficientnet.POINTS, shufflenet.POINTS, convnext.POINTS):
        for name, point in table.items():
            merged[name] = point.replace(name=name)
    return merged


_POINTS: dict[str, Point] | None = None


def points() -> dict[str, Point]:
    """All named points."""
    global _POINTS
    if _POINTS is None:
        _POINTS = _tables()
    return _POINTS


def names() -> list[str]:
    """Sorted names of the reference points."""
    return sorted(points())


def get(name: str) -> Point:
    """The named point, or a UserError listing the valid names."""
    table = points()
    if name not in table:
        raise UserError(f"unknown point {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def reference(name: str) -> str | None:
    """'torchvision:<fn>' or 'timm:<name>' for points that must equal a library model, else None."""
    for table in (plain, residual, dense, inception, mobile, regnet, efficientnet, shufflenet, convnext):
        if name in getattr(table, "REFERENCES", {}):
            return table.REFERENCES[name]
    return None
