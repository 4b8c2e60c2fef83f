"""Which cases of a per-point sweep the default run keeps: a cover of features, cheapest first; the rest is `-m sweep`.

The default run holds, for every feature a case has (its zoo table, block kinds and their kernels, CIFAR or ImageNet
geometry, attention, skip, act, norm, stem, pools, paddings, kernels, head, dropout, drop-path, layer scale, ...),
the cheapest case that has it: walk the cases from the cheapest and keep each one that brings a feature not yet
kept. The other cases get `pytest.mark.sweep`, so the default run and `pytest -m sweep` together run every case.
"""
from __future__ import annotations

import functools

import pytest

import dse.zoo as zoo
from dse.point import Point
from dse.zoo import convnext, dense, efficientnet, inception, mobile, plain, regnet, residual, shufflenet

TABLES = {"convnext": convnext, "dense": dense, "efficientnet": efficientnet, "inception": inception,
          "mobile": mobile, "plain": plain, "regnet": regnet, "residual": residual, "shufflenet": shufflenet}


def features(point: Point) -> set[str]:
    """What a point exercises in counting and building: its blocks, options, stem, pools, head and geometry."""
    geometry = "imagenet" if point.image_size >= 128 else "cifar"
    head, stem = point.head, point.stem
    out = {f"attention:{point.attention}", f"skip:{point.skip}", f"act:{point.act}", f"norm:{point.norm}",
           f"stem:{stem.type}", f"stem.pool:{stem.pool}", f"stem.stride:{stem.stride > 1}", f"geometry:{geometry}",
           f"head:{head.pool},{head.type},{bool(head.hidden)},{head.conv > 0},{head.norm},{head.dropout > 0}",
           f"dropout:{point.dropout > 0}", f"drop_path:{point.drop_path > 0}", f"layer_scale:{point.layer_scale > 0}",
           f"cardinality:{point.cardinality > 1}", f"dense_bottleneck:{point.dense_bottleneck > 0}",
           f"compression:{point.compression < 1}", f"bottleneck_ratio:{point.bottleneck_ratio}",
           f"in_chans:{point.in_chans}"}
    for s in point.stages:
        out |= {f"block:{s.block}", f"kernels:{s.block}:{s.kernels}",
                f"pool:{s.pool}", f"padding:{s.padding}", f"expansion:{s.block}:{s.expansion > 0}"}
    return out


def table(name: str) -> str:
    """The zoo table (dse/zoo/<table>.py) a named point comes from."""
    return next(t for t, module in TABLES.items() if name in module.POINTS)


def named_features(name: str) -> set[str]:
    """A named point's features, and the zoo table it comes from."""
    return features(zoo.get(name)) | {f"table:{table(name)}"}


def cover(cases: dict[str, set[str]], cost: dict[str, float]) -> set[str]:
    """The cases kept: from the cheapest, each one that brings a feature no kept case has."""
    kept, seen = set(), set()
    for case in sorted(cases, key=lambda c: (cost[c], c)):
        if cases[case] - seen:
            kept.add(case)
            seen |= cases[case]
    return kept


@functools.cache
def named_cost(name: str) -> float:
    """How dear a named point is to build and run: its blocks (module count) and its multiply-adds."""
    from dse.cost import complexity

    point = zoo.get(name)
    return point.num_blocks() * 2e7 + complexity(point).flops


def split(cases: list, kept: set, marks: dict | None = None) -> list:
    """`cases` as pytest params: those in `kept` run by default, the rest under `-m sweep` (`marks`: extra marks)."""
    marks = marks or {}
    out = []
    for case in cases:
        extra = list(marks.get(case, ()))
        key = case[0] if isinstance(case, tuple) else case
        if key not in kept:
            extra.append(pytest.mark.sweep)
        values = case if isinstance(case, tuple) else (case,)
        out.append(pytest.param(*values, marks=extra) if extra else case)
    return out


def named(names: list[str], marks: dict | None = None) -> list:
    """Named points as params: the feature cover of `names` by default, the rest under `-m sweep`."""
    kept = cover({n: named_features(n) for n in names}, {n: named_cost(n) for n in names})
    return split(names, kept, marks)


def seeded(spaces: list[str], total: int, default: int) -> list:
    """(space, first, stop) slices of `total` seeded draws per space: draws [0, default) run by default, the
    rest [default, total) under `-m sweep`; together the same draws as one case of `total` per space."""
    out = []
    for space in spaces:
        out.append(pytest.param(space, 0, default, id=f"{space}-0:{default}"))
        out.append(pytest.param(space, default, total, id=f"{space}-{default}:{total}", marks=pytest.mark.sweep))
    return out
