"""Every count a point, a space or a study sets has an upper bound, held when it is made (before anything sized by
it is counted, built or enqueued), and the refusal names the key and the limit."""
from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from dse import point as P
from dse import study, zoo
from dse.errors import UserError
from dse.space import model
from dse.space.parse import parse

RESNET = zoo.get("resnet20")


def stage(**changes):
    return (dataclasses.replace(RESNET.stages[0], **changes),) + RESNET.stages[1:]


@pytest.mark.parametrize("make, key, limit", [
    (lambda: RESNET.replace(stages=stage(depth=10 ** 8)), "stages[0].depth", P.MAX_DEPTH),
    (lambda: RESNET.replace(stages=RESNET.stages[:1] * (P.MAX_STAGES + 1)), "number of stages", P.MAX_STAGES),
    (lambda: RESNET.replace(stages=stage(depth=P.MAX_DEPTH) * 5), "blocks in all stages", P.MAX_BLOCKS),
    (lambda: RESNET.replace(stages=stage(width=10 ** 9)), "stages[0].width", P.MAX_WIDTH),
    (lambda: RESNET.replace(stages=stage(kernels=(3,) * 100)), "number of kernels", P.MAX_LIST),
    (lambda: RESNET.replace(stages=stage(kernels=(10 ** 6 + 1,))), "stages[0].kernels", P.MAX_KERNEL),
    (lambda: RESNET.replace(stem=dataclasses.replace(RESNET.stem, width=10 ** 7)), "stem.width", P.MAX_WIDTH),
    (lambda: RESNET.replace(head=dataclasses.replace(RESNET.head, hidden=(8,) * 50)), "head.hidden", P.MAX_LIST),
    (lambda: RESNET.replace(num_classes=10 ** 9), "num_classes", P.MAX_CLASSES),
    (lambda: RESNET.replace(image_size=10 ** 9), "image_size", P.MAX_IMAGE_SIZE),
    (lambda: RESNET.replace(cardinality=10 ** 9), "cardinality", P.MAX_WIDTH),
])
def test_point_counts_are_bounded_and_named(make, key, limit):
    with pytest.raises(UserError, match=rf"{re.escape(key)}.*over the limit of {limit:,}"):
        make()


def test_every_named_point_is_far_inside_the_bounds():
    points = [zoo.get(n) for n in zoo.names()]
    assert max(len(p.stages) for p in points) * 4 <= P.MAX_STAGES
    assert max(p.num_blocks() for p in points) * 4 <= P.MAX_BLOCKS
    assert max(s.depth for p in points for s in p.stages) * 4 <= P.MAX_DEPTH
    assert max(s.width for p in points for s in p.stages) * 4 <= P.MAX_WIDTH


def test_a_point_file_with_a_huge_depth_is_refused_from_the_dict():
    data = RESNET.to_dict()
    data["stages"][0]["depth"] = 10 ** 8
    with pytest.raises(UserError, match="stages\\[0\\].depth: 100000000 is over the limit"):
        P.Point.from_dict(yaml.safe_load(yaml.safe_dump(data)))


def space(params, **more):
    return {"base": "resnet20", "params": params, **more}


@pytest.mark.parametrize("data, match", [
    (space({"w": {"type": "int", "low": 8, "high": 64, "per_stage": 10 ** 8}}), "per_stage: 100000000 stages is over"),
    (space({"d": {"type": "choice", "values": list(range(model.MAX_CHOICES + 1))}}), "choices is over the limit"),
    (space({f"p{i}": [1, 2] for i in range(model.MAX_PARAMS + 1)}), f"limit of {model.MAX_PARAMS} params"),
    (space({"d": [1, 2]}, derived={f"x{i}": "d" for i in range(model.MAX_EXPRESSIONS + 1)}),
     "derived: .*over the limit"),
    (space({"d": [1, 2]}, checks=["d > 0"] * (model.MAX_EXPRESSIONS + 1)), "checks: .*over the limit"),
    (space({"d": [1, 2]}, grid=[{"d": 1}] * (model.MAX_GRID + 1)), "grid: 10,001 entries is over the limit of 10,000"),
    (space({"d": {"type": "int", "low": 1, "high": float("inf")}}), "high: must be an integer"),
    (space({"d": {"type": "float", "low": float("nan"), "high": 1.0}}), "low: must be a number"),
])
def test_space_counts_are_bounded_and_named(data, match):
    with pytest.raises(UserError, match=match):
        parse(data, "s", validate=False)


def test_a_space_crossing_too_many_choices_refuses_the_grid_not_the_space():
    params = {f"p{i}": list(range(10)) for i in range(7)}  # 10**7 combinations
    s = parse(space(params), "s", validate=False)
    assert s.point({"p0": 3}) is not None
    with pytest.raises(UserError, match=f"10,000,000 combinations \\(limit {model.MAX_CROSS:,}\\)"):
        s.grid_values()


def test_count_is_the_length_of_choices_without_listing_them():
    for p in (model.Param("a", "int", low=3, high=40, step=3), model.Param("b", "int", low=1, high=9, log=True),
              model.Param("c", "choice", values=(1, 2, 5))):
        assert p.count() == len(p.choices())
    huge = model.Param("d", "int", low=0, high=10 ** 15)
    assert huge.count() == 10 ** 15 + 1


def test_checks_on_a_huge_int_range_are_not_enumerated():
    data = space({"d": {"type": "int", "low": 1, "high": 10 ** 12}}, checks=["d > 0"])
    parse(data, "s", validate=False)._verify_checks()  # returns at once: 10**12 combinations are over the budget


@pytest.mark.parametrize("key, value, match", [
    ("seeds", 10 ** 6, f"study.seeds: 1,000,000 is over the limit of {study.MAX_SEEDS:,}"),
    ("n_trials", 10 ** 12, "study.n_trials: .* is over the limit"),
    ("grid", [{"label": f"c{i}", "point": "resnet20"} for i in range(study.MAX_CELLS + 1)], "cells is over the limit"),
    ("grid", "resnet20", "study.grid: must be a list"),
    ("timeout", float("nan"), "study.timeout"),
])
def test_study_counts_are_bounded(key, value, match):
    with pytest.raises(UserError, match=match):
        study.from_dict({"name": "x", key: value})


@pytest.mark.parametrize("value", [float("inf"), 3, [{"a": 1}]])
def test_objectives_of_the_wrong_type_are_one_line(value):
    """Found by tests/test_fuzz_files.py: `objectives: .inf` was a TypeError traceback."""
    with pytest.raises(UserError, match="study.objectives"):
        study.from_dict({"name": "x", "objectives": value})


def test_a_field_of_the_wrong_type_is_named():
    """Found by tests/test_fuzz_files.py: a word for a depth said only "'>' not supported ..."."""
    with pytest.raises(UserError, match="stages\\[0\\].depth: must be > 0, got 'abc'"):
        RESNET.replace(stages=stage(depth="abc"))
