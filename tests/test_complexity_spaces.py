"""For every shipped space: seeded random points count exactly what the built module has.

Params must equal the module's parameters and FLOPs must equal FlopCounterMode's total / 2 on one
forward pass. The 50 points per space (the first 5 by default, the other 45 under -m sweep) run at 16 px
(their counts follow the same code paths as at 32 px) and under a 5M-param cap so that building them stays
cheap; one point per space is also counted at Fashion-MNIST's 28 px x 1 channel and, on the meta device (shapes
only), at ImageNet's 224 px.
"""
from __future__ import annotations

import functools
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dse.network import build
from dse.cost import complexity
from dse.space import load, names

import represent  # tests/represent.py

SPACES = names()
POINTS_PER_SPACE = 50  # one seeded stream of draws per space; the first DEFAULT_POINTS run by default, the rest
DEFAULT_POINTS = 5  # under -m sweep (tests/represent.py)
SMALL = 16
PARAMS_CAP = 5e6


def measured(point, device: str = "cpu") -> tuple[int, int, tuple]:
    """(params, multiply-adds, output shape) of the built point on one image."""
    with torch.device(device):
        model = build(point).eval()
    x = torch.randn(1, point.in_chans, point.image_size, point.image_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(x)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2, tuple(out.shape)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@functools.cache
def drawn(name: str) -> tuple:
    """The space's POINTS_PER_SPACE seeded random points at 16 px under the params cap (counting only, no torch):
    drawn once per run."""
    space = load(name).with_constraints(params={"max": PARAMS_CAP}).with_geometry(image_size=SMALL)
    rng = random.Random(1234)
    return tuple(space.sample(rng) for _ in range(POINTS_PER_SPACE))


@pytest.mark.parametrize("name, first, stop", represent.seeded(SPACES, POINTS_PER_SPACE, DEFAULT_POINTS))
def test_random_points_count_exactly(name, first, stop):
    for i, point in enumerate(drawn(name)[first:stop], first):
        counted = complexity(point)
        params, macs, shape = measured(point)
        assert (counted.params, counted.flops) == (params, macs), f"{name} draw {i}: {point.to_json()}"
        assert shape == (1, point.num_classes)


@pytest.mark.parametrize("name", SPACES)
def test_random_points_are_varied(name):
    seen = {point.id for point in drawn(name)}
    assert len(seen) > POINTS_PER_SPACE // 5, f"{name}: random points are nearly all the same"


@pytest.mark.parametrize("name", SPACES)
def test_points_count_exactly_at_fashion_mnist_size(name):
    point = load(name).with_constraints(params={"max": PARAMS_CAP}).sample(3, image_size=28, in_chans=1)
    params, macs, shape = measured(point)
    assert complexity(point) == (params, macs)
    assert shape == (1, point.num_classes)


@pytest.mark.parametrize("name", SPACES)
def test_points_count_exactly_at_imagenet_size(name):
    space = load(name).with_geometry(image_size=224, num_classes=1000)
    point = space.sample(7)
    params, macs, shape = measured(point, device="meta")
    assert complexity(point) == (params, macs)
    assert shape == (1, 1000)
