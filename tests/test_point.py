"""Point serialisation, ids, and the UserErrors that name the offending field."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import dse.zoo as zoo
from dse.cost import complexity
from dse.errors import UserError
from dse.point import Point, Stage, Stem
from dse.zoo.residual import preact_cifar, resnet_cifar, resnext_cifar, wrn

NAMES = zoo.names()
BASIC = (Stage("basic", 1, 16),)


@pytest.mark.parametrize("name", NAMES)
def test_yaml_and_json_round_trip(name):
    point = zoo.get(name)
    from_yaml = Point.from_dict(yaml.safe_load(yaml.safe_dump(point.to_dict())))
    from_json = Point.from_dict(json.loads(point.to_json()))
    assert from_yaml == point and from_json == point
    assert from_yaml.id == point.id == from_json.id


def test_id_ignores_name_and_tracks_architecture():
    point = zoo.get("resnet20")
    assert point.replace(name="anything").id == point.id
    assert point.replace(num_classes=100).id != point.id
    assert zoo.get("resnet50").id == zoo.get("resnext50_1x64d").id  # the same network under two names
    assert zoo.get("resnet110").id != zoo.get("resnet110_sd").id
    assert len(point.id) == 10 and int(point.id, 16) >= 0


def test_id_is_the_same_in_a_fresh_process():
    code = "import dse.zoo as z; print(z.get('wrn_28_10').id)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == zoo.get("wrn_28_10").id


@pytest.mark.parametrize("make, field", [
    (lambda: Point(BASIC, attention="transformer"), "attention"),
    (lambda: Point(BASIC, skip="sideways"), "skip"),
    (lambda: Point((Stage("capsule", 1, 16),)), "stages[0].block"),
    (lambda: Point((Stage("basic", 0, 16),)), "stages[0].depth"),
    (lambda: Point((Stage("basic", -2, 16),)), "stages[0].depth"),
    (lambda: Point((Stage("basic", 1, 0),)), "stages[0].width"),
    (lambda: Point((Stage("basic", 1, 16), Stage("bottleneck", 1, -64))), "stages[1].width"),
    (lambda: Point((Stage("basic", 1, 16, kernels=(3, 2)),)), "stages[0].kernels"),
    (lambda: Point((Stage("dense", 6),), skip="dense", growth_rate=0), "growth_rate"),
    (lambda: Point((Stage("dense", 6),), skip="dense", growth_rate=-12), "growth_rate"),
    (lambda: Point(BASIC, cardinality=0), "cardinality"),
    (lambda: Point(BASIC, stem=Stem(width=0)), "stem.width"),
    (lambda: Point.from_dict({**zoo.get("resnet20").to_dict(), "depth_multiplier": 2}), "depth_multiplier"),
    (lambda: Point.from_dict({"stages": [{"block": "basic", "depth": 1, "width": 16, "widht": 3}]}), "widht"),
    (lambda: wrn(20, 2), "depth: 20 is not of the form 6N+4"),
    (lambda: resnet_cifar(21), "depth: 21 is not of the form 6N+2"),
    (lambda: preact_cifar(165), "depth: 165 is not of the form 9N+2"),
    (lambda: resnext_cifar(30, 8, 64), "depth: 30 is not of the form 9N+2"),
    (lambda: wrn(28, 0), "k:"),
])
def test_user_errors_name_the_field(make, field):
    with pytest.raises(UserError) as err:
        make()
    assert field in str(err.value) and "\n" not in str(err.value)


def test_grouped_width_is_always_a_multiple_of_cardinality():
    """mid_widths() is cardinality x per-group width, so a grouped conv always splits evenly."""
    for c, d in ((3, 5), (7, 9), (32, 4), (64, 3)):
        point = resnext_cifar(29, c, d)
        assert all(m % c == 0 for m in point.mid_widths())


def test_count_errors_name_the_field():
    """sk's input split, residual padding and splat's groups are refused where the Point is made, naming the
    field, so nothing that exists fails to count."""
    with pytest.raises(UserError, match=r"^attention: 'sk' .*cardinality 8"):
        complexity(resnext_cifar(29, 8, 7).replace(attention="sk"))
    with pytest.raises(UserError, match=r"^stages\[0\]\.padding"):
        complexity(Point((Stage("basic", 1, 16, padding="valid"),)))
    with pytest.raises(UserError, match=r"^attention: 'splat'"):
        complexity(resnext_cifar(29, 3, 5).replace(attention="splat"))


@pytest.mark.parametrize("name", ["wrn_28_10", "resnext29_16x64d", "densenet_bc_100_12", "googlenet", "vgg16"])
def test_thinned_point_keeps_the_layout_and_counts_exactly(name):
    import torch

    from dse.network import build

    full = zoo.get(name)
    thin = full.thinned(0.125, min_width=4)
    assert [s.depth for s in thin.stages] == [s.depth for s in full.stages]
    assert thin.cardinality == full.cardinality and [s.kernels for s in thin.stages] == [s.kernels for s in full.stages]
    for a, b in zip(full.stages, thin.stages):
        assert b.width == (max(4, round(a.width / 8)) if a.width else 0)
    assert complexity(thin).params < complexity(full).params / 5  # min_width keeps narrow layers (growth 12 -> 4)
    module = build(thin.replace(image_size=32))
    assert sum(p.numel() for p in module.parameters()) == complexity(thin.replace(image_size=32)).params
    assert full.thinned(1.0) is full


def test_thinning_factor_out_of_range_names_the_key():
    with pytest.raises(UserError, match="model.width_scale"):
        zoo.get("wrn_16_8").thinned(1.5)
