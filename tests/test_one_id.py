"""One network, one id: two points whose families make the same graph have the same Point.id.

A point's fingerprint is the repr of the graph dse.families.net makes from it (every conv, norm, pool, attention,
dropout and head node with its sizes; the graph never reads the id or the name). Seeded draws from every space,
every named point and random edits of them (edits that change the network and edits of fields that some block
types have no use for) are grouped by fingerprint, and each group must hold one id. tests/test_point_rules.py
edits points the same way; its module builds torch models when imported, so its edit tables are not imported here.
"""
from __future__ import annotations

import random
from collections import defaultdict

import pytest

from dse import zoo
from dse.errors import Infeasible, UserError
from dse.families import net
from dse.point import Point, Stage
from dse.space import load, names

SEED = 20261206
DRAWS = 8  # per space
EDITS = 4  # per base point
MAX_BLOCKS = 200  # deeper named points make large graphs; their fields are covered by the smaller ones


def _stage_edit(rng: random.Random, d: dict) -> None:
    """Change one field of one stage, to a value that may or may not change the network."""
    s = rng.choice(d["stages"])
    key = rng.choice(["kernels", "stride", "width", "expansion", "depth", "pool", "branches"])
    s[key] = {
        "kernels": lambda: rng.choice([[3], [1, 3], [5], [3, 3]]),
        "stride": lambda: rng.choice([1, 2]),
        "width": lambda: rng.choice([s.get("width", 0) or 0, 16, 32, 48]),
        "expansion": lambda: rng.choice([0.0, 1.0, 2.5, 4.0]),
        "depth": lambda: rng.choice([1, 2]),
        "pool": lambda: rng.choice(["none", "max2", "avg2"]),
        "branches": lambda: s.get("branches") or [],
    }[key]()


def _point_edit(rng: random.Random, d: dict) -> None:
    """Change one point-wide field, often one that the point's blocks have no use for."""
    key = rng.choice(["attention", "cardinality", "bottleneck_width", "group_width", "bottleneck_ratio",
                      "expansion", "growth_rate", "compression", "dense_bottleneck", "layer_scale", "attn_ratio",
                      "dropout", "drop_path", "skip", "act"])
    d[key] = {
        "attention": lambda: rng.choice(["none", "se", "eca"]),
        "cardinality": lambda: rng.choice([1, 2, 4]),
        "bottleneck_width": lambda: rng.choice([4, 16, 64]),
        "group_width": lambda: rng.choice([0, 8, 16]),
        "bottleneck_ratio": lambda: rng.choice([0.5, 1.0, 2.0]),
        "expansion": lambda: rng.choice([1.0, 4.0, 6.0]),
        "growth_rate": lambda: rng.choice([0, 12, 32]),
        "compression": lambda: rng.choice([0.5, 1.0]),
        "dense_bottleneck": lambda: rng.choice([0, 4]),
        "layer_scale": lambda: rng.choice([0.0, 1e-6]),
        "attn_ratio": lambda: rng.choice([0.0625, 0.25]),
        "dropout": lambda: rng.choice([0.0, 0.2]),
        "drop_path": lambda: rng.choice([0.0, 0.1]),
        "skip": lambda: rng.choice(["none", "identity", "projection"]),
        "act": lambda: rng.choice(["relu", "silu"]),
    }[key]()


def _bases() -> list[tuple[str, Point]]:
    out = [(name, zoo.get(name)) for name in zoo.names() if zoo.get(name).num_blocks() <= MAX_BLOCKS]
    for name in names():
        space = load(name)
        for seed in range(DRAWS):
            try:
                out.append((f"{name}#{seed}", space.sample(seed, feasible=False)))
            except (Infeasible, UserError):  # a draw the space refuses
                continue
    return out


def points() -> list[tuple[str, Point]]:
    """The bases and seeded random edits of each (edits Point refuses are left out)."""
    rng, out = random.Random(SEED), []
    for label, base in _bases():
        out.append((label, base))
        for j in range(EDITS):
            d = base.to_dict()
            for _ in range(rng.choice([1, 1, 2])):
                (_stage_edit if rng.random() < 0.3 else _point_edit)(rng, d)
            try:
                out.append((f"{label}/{j}", Point.from_dict(d)))
            except UserError:
                continue
    return out


def fingerprint(point: Point) -> str:
    """The graph the point's families make, as text: equal for equal networks, blind to the id."""
    return repr(net(point))


def test_points_with_equal_graphs_have_equal_ids():
    drawn = points()
    assert len(drawn) >= 1000, len(drawn)
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for label, point in drawn:
        groups[fingerprint(point)].setdefault(point.id, label)
    split = [ids for ids in groups.values() if len(ids) > 1]
    assert not split, f"{len(split)} networks with several ids, e.g. {split[:3]}"
    assert len(groups) > 400  # the draws and edits reach many networks, not a few


def test_cardinality_on_basic_blocks_gives_the_same_id():
    # Before: WRN-28-10 with cardinality 2 (a basic block has no grouped conv) built the same net under a new id.
    wrn = zoo.get("wrn_28_10")
    twin = wrn.replace(cardinality=2)
    assert fingerprint(twin) == fingerprint(wrn)
    assert twin.id == wrn.id
