"""RegNet X/Y through the family seam: the 24 named points equal timm's regnetx_/regnety_002 ... 320 exactly in
params, multiply-adds and activations (forward hooks on timm's own models), pycls's published activations, the
quantized-linear width rule equals timm's generator, and the `regnet` space keeps four stages."""
from __future__ import annotations

import random

import pytest
import timm
import torch
from timm.models.regnet import adjust_widths_groups_comp, generate_regnet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dse.zoo as zoo
from dse.cost import measures
from dse.errors import Infeasible, UserError
from dse.families.regnet import stage_widths
from dse.network import build
from dse.space import load

NAMES = [n for n in zoo.names() if n.startswith("regnet") and not n.endswith("cifar")]


def timm_counts(name: str) -> tuple[int, int, int]:
    """(params, multiply-adds, activations) of timm's model at 224 px, on the meta device."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False).eval()
    acts = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(lambda m, i, o: acts.append(o.numel()))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2, sum(acts)


def test_all_24_named_points():
    assert len(NAMES) == 24 and {n[:7] for n in NAMES} == {"regnetx", "regnety"}


@pytest.mark.parametrize("name", NAMES)
def test_named_points_equal_timm(name):
    ours = measures(zoo.get(name))
    params, flops, acts = timm_counts(name)
    assert ours.params == params
    assert abs(ours.flops - flops) <= 0.005 * flops
    assert ours.acts == acts


def test_pycls_published_activations():
    # pycls's model zoo (acts column), measured by hooks on timm in ../shared/STACK.md
    assert measures(zoo.get("regnetx_002")).acts == 2_164_056
    assert measures(zoo.get("regnety_002")).acts == 2_168_052
    assert measures(zoo.get("regnetx_016")).acts == 7_933_512
    assert measures(zoo.get("regnety_032")).params == 19_436_338


def test_paper_flop_regimes():
    # the names are the paper's regimes: 200MF ... 32GF, within 10% of the nominal multiply-adds
    for name in NAMES:
        nominal = int(name[-3:]) * 1e8
        assert abs(measures(zoo.get(name)).flops - nominal) < 0.1 * nominal, name


def test_width_rule_equals_timms_generator():
    rng = random.Random(0)
    for _ in range(200):
        w0, wa, wm = 8 * rng.randint(1, 40), rng.uniform(0, 120), rng.uniform(1.5, 3)
        d, g, b = rng.randint(6, 30), rng.choice([1, 8, 16, 24, 56]), rng.choice([1.0, 0.5, 0.25])
        widths, _, groups = generate_regnet(wa, w0, wm, d, g)
        uniq = sorted(set(widths))
        expect, _ = adjust_widths_groups_comp(uniq, [b] * len(uniq), groups)
        got, depths = stage_widths(w0, wa, wm, d, g, b)
        assert got == expect and depths == [widths.count(w) for w in uniq]


def test_space_keeps_four_stages_and_trains_a_step():
    space = load("regnet")
    point = space.sample(1)
    assert len(point.stages) == 4 and [s.width for s in point.stages] == sorted(s.width for s in point.stages)
    with pytest.raises(Infeasible, match="stages; the space keeps 4"):
        space.point({"w0": 8, "wa": 4.0, "wm": 3.0, "d": 6})
    torch.manual_seed(0)
    model = build(point, num_classes=10, in_chans=1, image_size=28)
    assert sum(p.numel() for p in model.parameters()) == measures(point, 28, 1, 10).params
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.randint(0, 10, (4,)))
    loss.backward()
    assert torch.isfinite(loss)


def test_rule_inputs_are_bounded():
    with pytest.raises(UserError, match="0 < depth <= 128"):
        stage_widths(24, 36.0, 2.5, 10 ** 9, 8)
    with pytest.raises(UserError, match="w0 a positive multiple of 8"):
        stage_widths(25, 36.0, 2.5, 13, 8)


def test_group_width_must_divide():
    point = zoo.get("regnetx_002").replace(group_width=7)
    with pytest.raises(UserError, match="group_width: 7 does not divide"):
        measures(point)
