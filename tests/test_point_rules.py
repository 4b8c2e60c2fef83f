"""A Point that can be constructed can be counted and built: validation lives in one place, Point.check.

Seeded random edits of every named point and of points drawn from every space (attention, padding, kernels,
strides, widths, expansion, group width, cardinality, dropout, drop-path, stem, image size, ...) either raise
UserError when the Point is made, or give a Point that dse.cost counts and dse.network builds (on the meta device,
or on the CPU for small points, where that is faster) into a module whose forward pass gives (batch, num_classes)
and whose parameter count is the counted one. By default, one edited case per edit kind and base kind runs; the
rest under -m sweep.
"""
from __future__ import annotations

import random

import pytest
import torch

from dse import zoo
from dse.cost import measures
from dse.errors import Infeasible, UserError
from dse.network import build
from dse.point import ATTENTIONS, BLOCK_RULES, Point, Stage
from dse.space import load, names

import represent  # tests/represent.py

EDITS_PER_BASE = 2
MAX_BLOCKS = 200  # deeper named points (preact_resnet1001) take seconds to build even on meta
SEED = 20261205
SMALL_PARAMS, SMALL_FLOPS = 3e6, 3e8  # points this small build and run faster on the CPU than on meta
# edits whose every value is a kind of its own (an attention, a padding, ...); for the others, any value is one kind
OPTIONS = {"attention", "skip", "act", "stem", "stages.padding", "stages.pool", "stages.kernels"}


def _stage_edit(rng: random.Random, d: dict) -> str:
    s = rng.choice(d["stages"])
    key = rng.choice(["padding", "kernels", "stride", "width", "expansion", "depth", "pool"])
    s[key] = {
        "padding": lambda: rng.choice(["same", "valid"]),
        "kernels": lambda: rng.choice([[3], [1, 3], [5], [3, 3], [7], [1]]),
        "stride": lambda: rng.choice([1, 2, 3]),
        "width": lambda: max(1, s.get("width", 0) + rng.choice([-3, -1, 1, 2, 5])) if s.get("width") else 0,
        "expansion": lambda: rng.choice([0.0, 0.1, 1.0, 2.5]),
        "depth": lambda: rng.choice([1, 2]),
        "pool": lambda: rng.choice(["none", "max2", "max3", "avg2"]),
    }[key]()
    return f"stages.{key}={s[key]}"


def _point_edit(rng: random.Random, d: dict) -> str:
    key = rng.choice(["attention", "cardinality", "group_width", "bottleneck_ratio", "expansion", "dropout",
                      "drop_path", "layer_scale", "image_size", "stem", "skip", "act", "attn_ratio",
                      "bottleneck_width"])
    value = {
        "attention": lambda: rng.choice(ATTENTIONS),
        "cardinality": lambda: rng.choice([1, 2, 3, 4, 32]),
        "group_width": lambda: rng.choice([1, 3, 8, 16, 24]),
        "bottleneck_ratio": lambda: rng.choice([0.25, 0.5, 1.0, 2.0]),
        "expansion": lambda: rng.choice([0.0, 0.1, 1.0, 4.0]),
        "dropout": lambda: rng.choice([0.0, 0.2]),
        "drop_path": lambda: rng.choice([0.0, 0.1]),
        "layer_scale": lambda: rng.choice([0.0, 1e-6]),
        "image_size": lambda: rng.choice([8, 15, 32, 33]),
        "stem": lambda: {**d["stem"], **rng.choice([{"width": 3}, {"kernel": 5}, {"stride": 2}, {"type": "none"},
                                                      {"type": "conv_bare"}, {"pool": "max3"}])},
        "skip": lambda: rng.choice(["none", "identity", "projection"]),
        "act": lambda: rng.choice(["relu", "silu", "gelu"]),
        "attn_ratio": lambda: rng.choice([0.0625, 0.25, 0.5]),
        "bottleneck_width": lambda: rng.choice([4, 6, 64]),
    }[key]()
    d[key] = value
    return f"{key}={value}"


def _bases() -> list[tuple[str, Point]]:
    out = [(name, zoo.get(name)) for name in zoo.names() if zoo.get(name).num_blocks() <= MAX_BLOCKS]
    for name in names():
        space = load(name)
        for seed in range(3):
            try:
                out.append((f"{name}#{seed}", space.sample(seed, feasible=False)))
            except (Infeasible, UserError):  # a draw the space refuses is no base to edit
                continue
    return out


def _small(point: Point) -> Point:
    """The point at a CIFAR-like size so that the meta forward is cheap (ImageNet nets at 64 px)."""
    return point if point.image_size <= 64 else point.replace(image_size=64)


def edited(seed: int) -> list[tuple[str, dict, set[str]]]:
    """(label, the edited point's dict, its kinds: the base's zoo table or space, and 'key', 'key=value' of each
    edit)."""
    rng = random.Random(seed)
    out = []
    for label, base in _bases():
        for j in range(EDITS_PER_BASE):
            d = _small(base).to_dict()
            edits = {f"base:{represent.table(label) if label in zoo.names() else label.partition('#')[0]}"}
            for _ in range(rng.choice([1, 1, 2, 3])):
                edit = (_stage_edit if rng.random() < 0.4 else _point_edit)(rng, d)
                key = edit.partition("=")[0]
                edits |= {key, edit} if key in OPTIONS else {key}
            out.append((f"{label}/{j}", d, edits))
    return out


def check_counts_and_builds(point: Point) -> None:
    m = measures(point)
    small = m.params < SMALL_PARAMS and m.flops < SMALL_FLOPS
    with torch.device("cpu" if small else "meta"), torch.no_grad():
        model = build(point).eval()
        out = model(torch.zeros(2, point.in_chans, point.image_size, point.image_size))
    assert tuple(out.shape) == (2, point.num_classes)
    assert sum(p.numel() for p in model.parameters()) == m.params


CASES = edited(SEED)


def _cost(case: tuple) -> float:
    """How dear the edited point is to build on meta: its base's blocks."""
    return sum(s.get("depth", 1) for s in case[1]["stages"])


# Every edit kind (and value of the OPTIONS: attention=sk, stages.kernels=[5], ...) and every zoo table or space, in
# the cheapest edited case that has it (tests/represent.py's cover), runs by default; the other cases under -m sweep.
DEFAULT = represent.cover({c[0]: c[2] for c in CASES}, {c[0]: _cost(c) for c in CASES})
GROUPS = [pytest.param("default", id="default"), pytest.param("sweep", id="sweep", marks=pytest.mark.sweep)]


@pytest.mark.parametrize("group", GROUPS)
def test_constructed_points_count_and_build(group):
    made = refused = 0
    for label, d, _ in [c for c in CASES if (c[0] in DEFAULT) == (group == "default")]:
        try:
            point = Point.from_dict(d)
        except UserError:
            refused += 1
            continue
        made += 1
        try:
            check_counts_and_builds(point)
        except Exception as exc:  # noqa: BLE001 - any failure here breaks the rule; name the edit
            raise AssertionError(f"{label}: constructed but not counted/built: {type(exc).__name__}: {exc}\n"
                                 f"{point.to_json()}") from None
    assert made > 10  # every group builds points


def test_the_edits_reach_both_sides_of_the_rule():
    refused = 0
    for _, d, _ in CASES:
        try:
            Point.from_dict(d)
        except UserError:
            refused += 1
    assert 0.1 * len(CASES) < refused < 0.7 * len(CASES), (refused, len(CASES))


def test_every_block_rule_names_a_family_that_makes_stages():
    from dse.families import FAMILIES

    assert {rule.family for rule in BLOCK_RULES.values()} == set(FAMILIES)  # and every family makes some block
    assert all(callable(FAMILIES[rule.family].stage) for rule in BLOCK_RULES.values())


def test_an_unknown_block_is_refused_with_every_valid_name():
    valid = ("plain, basic, bottleneck, preact_basic, preact_bottleneck, dense, inception, dwsep, inverted, regnet, "
             "mbconv, shuffle, convnext")
    with pytest.raises(UserError) as refused:
        Point((Stage("basik", 1, 16),))
    assert str(refused.value) == f"stages[0].block: unknown value 'basik'; valid: {valid}"


@pytest.mark.parametrize("stage, field, message", [
    (Stage("shuffle", 1, 9), {}, "width: a shuffle stage's width is split in two halves"),
    (Stage("regnet", 1, 24), {"group_width": 16}, "group_width: 16 does not divide the 3x3 conv width 24"),
    (Stage("mbconv", 1, 16, kernels=(3, 3)), {}, "kernels: a mbconv block has one depthwise or grouped kernel"),
    (Stage("convnext", 1, 16), {"attention": "se"}, "attention 'se' is not supported for block 'convnext'"),
    (Stage("mbconv", 1, 16), {"dropout": 0.1}, "dropout: mbconv blocks have no inner dropout"),
    (Stage("shuffle", 1, 16), {"drop_path": 0.1}, "drop_path: shuffle blocks have no residual branch to drop"),
    (Stage("basic", 1, 16, padding="valid"), {}, "padding: basic blocks need 'same' padding"),
])
def test_refused_at_construction_with_the_field_named(stage, field, message):
    with pytest.raises(UserError, match=message):
        Point((stage,), **{"group_width": 8, **field})


def test_an_image_too_small_for_the_point_is_refused_with_the_size_it_needs():
    # VGG-16 halves its map five times (max 2x2/2 after each stage, 'same' convs): 32 px is the least (2^5).
    # Before: a 16 px VGG-16 counted without a word, through a 0 x 0 map that torch refuses to build.
    vgg = zoo.get("vgg16")
    with pytest.raises(UserError, match=r"^image_size: 16 px is too small .* vanishes at stages\[4\]\.pool; "
                                        r"it needs at least 32 px"):
        vgg.replace(image_size=16)
    assert vgg.replace(image_size=32).smallest_image_size() == 32
    with pytest.raises(UserError, match="^image_size: too small for this point"):
        measures(vgg, image_size=16)  # a geometry other than the point's own


def test_a_trial_whose_values_make_no_valid_point_fails_and_the_study_goes_on():
    # Before Point.check held every rule, such values failed in counting, recorded as a failed trial; the
    # same record now, where the Point is made, instead of an error that would end the whole study.
    import optuna

    from dse.trials.objective import Objective, TrialFailed
    from dse.space.parse import parse

    space = parse({"base": "resnet20", "params": {"att": {"type": "choice", "values": ["none", "sk"]},
                                                  "w": {"type": "choice", "values": [15, 16]}},
                   "set": {"attention": "att", "stem.width": "w", "stages[0].width": "w"}}, "odd", validate=False)
    study = optuna.create_study()
    study.enqueue_trial({"att": "sk", "w": 15})  # sk splits its input channels in two: 15 does not split
    trial = study.ask()
    with pytest.raises(TrialFailed, match="^failed: invalid: odd: invalid point .*'sk' splits 15 input channels"):
        Objective(study=None, space=space, cells=None, data=None, recipe=None, loggers=None)(trial)
    attrs = study._storage.get_trial(trial._trial_id).user_attrs
    assert attrs["status"] == "failed" and attrs["reason"].startswith("invalid: ")


@pytest.mark.parametrize("name, field, value", [("vgg16", "attention", "se"), ("vgg16", "drop_path", 0.1),
                                                ("densenet121", "drop_path", 0.1), ("googlenet", "drop_path", 0.1)])
def test_a_field_no_stage_uses_is_refused(name, field, value):
    # Before: VGG-16 with attention 'se' built the same net as without, under another id (trained twice).
    with pytest.raises(UserError, match=f"^{field}: no stage of this point uses it"):
        zoo.get(name).replace(**{field: value})


def test_a_field_one_stage_uses_is_accepted():
    mixed = Point((Stage("plain", 1, 16), Stage("basic", 1, 32, 2)), attention="se", drop_path=0.1)
    assert measures(mixed).params > measures(mixed.replace(attention="none")).params
