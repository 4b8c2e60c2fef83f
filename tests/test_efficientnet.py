"""EfficientNet through the family seam: named points equal timm's efficientnet_b0 ... b5 in params, FLOPs and
activations at the paper's resolution (224, 240, 260, 300, 380, 456), at timm's default input size and at 224 px,
and compute the same function (timm's weights copied in give its outputs); single blocks equal timm's DepthwiseSeparableConv
and InvertedResidual at widths off the multiples of 8 (expansion and SE rounding); the space gives the paper's
points and trains a step at Fashion-MNIST size; stages check their fields."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dse.zoo as zoo
from dse.cost import measures
from dse.errors import UserError
from dse.families import efficientnet as family
from dse.graph.count import State, step
from dse.network import build
from dse.point import Point, Stage
from dse.space import load

NAMES = [f"efficientnet_b{i}" for i in range(6)]
PAPER_SIZES = (224, 240, 260, 300, 380, 456)
TIMM_SIZES = (224, 240, 256, 288, 320, 448)  # timm 1.0.31's pretrained_cfg input_size
COUNTED = (nn.Conv2d, nn.Linear)  # no non-global pools in EfficientNet; the SE mean is no module


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def hooked(model: nn.Module, size: int, in_chans: int = 3) -> tuple[int, int, int]:
    """(params, multiply-adds, activations) of one image on the model's device: FlopCounterMode / 2, and output
    elements of every conv and linear."""
    acts = []
    hooks = [m.register_forward_hook(lambda m, i, o: acts.append(o.numel())) for m in model.modules()
             if isinstance(m, COUNTED)]
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, in_chans, size, size, device=device))
    for h in hooks:
        h.remove()
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2, sum(acts)


def timm_model(name: str, **kwargs) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, **kwargs).eval()


@pytest.mark.parametrize("name, paper, default", list(zip(NAMES, PAPER_SIZES, TIMM_SIZES)))
def test_named_points_equal_timm(name, paper, default):
    point = zoo.get(name)
    assert point.image_size == paper
    with torch.device("meta"):
        theirs = timm_model(name)
        ours = build(point).eval()
    assert theirs.pretrained_cfg["input_size"][-1] == default
    for size in sorted({224, paper, default}):  # 224 px: the size tests/test_zoo.py compares library models at
        m = measures(point, image_size=size)
        params, flops, acts = hooked(theirs, size)
        assert m.params == params
        assert abs(m.flops - flops) <= 0.005 * flops and m.flops == flops  # in fact equal: the same convs and fc
        assert m.acts == acts
        if size == default != paper:  # at the point's own size: tests/test_zoo.py, test_measures.py (every named point)
            assert (m.params, m.flops, m.acts) == hooked(ours, size)


def test_published_sizes():
    # timm / STACK.md: B0 5,288,548, B1 7,794,184, B3 12,233,232 params; pycls: B0 6,748,036 activations at 224
    got = [measures(zoo.get(n)) for n in NAMES]
    assert [g.params for g in got] == [5_288_548, 7_794_184, 9_109_994, 12_233_232, 19_341_616, 30_389_784]
    assert got[0].acts == 6_748_036
    # Tan & Le 2019, Table 2: 5.3M/0.39B, 7.8M/0.70B, 9.2M/1.0B, 12M/1.8B, 19M/4.2B, 30M/9.9B. Counted at the
    # paper's resolutions: 0.386, 0.687, 0.994, 1.827, 4.394, 10.266 G (the paper's B4/B5 are 4-5% lower)
    assert [round(g.flops / 1e9, 3) for g in got] == [0.386, 0.687, 0.994, 1.827, 4.394, 10.266]
    paper = (5.3e6, 7.8e6, 9.2e6, 12e6, 19e6, 30e6)
    assert all(abs(g.params - p) <= 0.02 * p for g, p in zip(got, paper))


def test_same_function_as_timm():
    """timm's B2 weights (a DS block without and with a skip, MBConv blocks, depth x1.2, width x1.1), copied into
    our module in order, give its outputs in eval mode at 64 px."""
    torch.manual_seed(0)
    theirs = timm_model("efficientnet_b2")
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so a swapped channel would show
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    ours = build(zoo.get("efficientnet_b2"), image_size=64).eval()
    source, target = list(theirs.state_dict().values()), list(ours.state_dict().values())
    assert [t.shape for t in source] == [t.shape for t in target]
    ours.load_state_dict(dict(zip(ours.state_dict(), source)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("cin, cout, e, k, stride", [(12, 12, 1, 3, 1), (20, 12, 1, 5, 2), (12, 20, 3, 3, 2),
                                                     (20, 20, 4, 5, 1), (14, 14, 6, 3, 1), (18, 26, 2.5, 5, 1)])
def test_blocks_equal_timm_blocks(cin, cout, e, k, stride):
    """One block at widths off the multiples of 8: timm rounds the expanded width with make_divisible and SE to
    round(mid x 0.25 / e); params, multiply-adds and whether it adds a skip agree."""
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite

    se = partial(SqueezeExcite, rd_ratio=0.25 / e)
    args = dict(dw_kernel_size=k, stride=stride, act_layer=nn.SiLU, se_layer=se)
    theirs = (DepthwiseSeparableConv(cin, cout, **args) if e == 1 else InvertedResidual(cin, cout, exp_ratio=e, **args))
    point = Point((Stage("mbconv", 1, cout, stride, kernels=(k,), expansion=e),), attention="se", attn_ratio=0.25,
                  act="silu", skip="identity", in_chans=cin)
    node, width = family.block(point, 0, 0, cin, stride, 0.0)
    s = step(node, State(0, 0, 0, cin, 16, 16))
    params, flops, _ = hooked(theirs.eval(), 16, cin)
    assert (s.params, s.macs, (s.c, s.h), width) == (params, flops, (cout, 16 // stride), cout)
    assert (type(node).__name__ == "Add") == theirs.has_skip


def test_receptive_field():
    # by hand: stem 3/2 -> 3 px (stride 2); DS 3x3: +2*2 = 7; stage 2 (3x3): +2*2, +2*4 = 19 (stride 4);
    # stage 3 (5x5): +4*4, +4*8 = 67 (8); stage 4 (3x3): +2*8, 2 x +2*16 = 147 (16); stage 5 (5x5, stride 1):
    # 3 x +4*16 = 339; stage 6 (5x5): +4*16, 3 x +4*32 = 787 (32); stage 7 (3x3): +2*32 = 851
    m = measures(zoo.get("efficientnet_b0"))
    assert (m.rf, m.rf_stride) == (851, 32)


def test_cifar_point_keeps_two_pixels():
    point = zoo.get("efficientnet_b0_cifar")
    assert point.stem.stride == 1 and (point.image_size, point.num_classes) == (32, 10)
    with torch.device("meta"):
        model = build(point).eval()
    assert model.features(torch.empty(1, 3, 32, 32, device="meta")).shape[-2:] == (2, 2)


def test_space_gives_the_paper_points():
    space = load("efficientnet")
    assert space.point(space.default_values()).replace(name="") == zoo.get("efficientnet_b0_cifar").replace(name="")
    for phi, (name, size) in enumerate(zip(NAMES, PAPER_SIZES)):
        at = space.with_geometry(image_size=size, num_classes=1000)
        assert at.resolve({"phi": phi})["resolution"] == size
        assert at.point({"phi": phi}).replace(name="") == zoo.get(name).replace(name="")


def test_space_admits_a_share_at_cifar_size():
    space, feasible = load("efficientnet"), 0
    for seed in range(40):
        point = space.sample(seed, feasible=False)
        feasible += not space.check(point)
    assert 10 <= feasible <= 36


def test_space_at_fashion_mnist_size_trains_a_step():
    torch.manual_seed(0)
    point = load("efficientnet").sample(3, image_size=28, in_chans=1)
    model = build(point).train()
    m = measures(point)
    assert sum(p.numel() for p in model.parameters()) == m.params
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("changes", [dict(skip="none", attention="none"), dict(skip="projection", norm="none"),
                                     dict(act="relu", expansion=4.0)])
def test_variants_count_like_the_built_module(changes):
    point = zoo.get("efficientnet_b0_cifar").replace(**changes)
    if "expansion" in changes:  # stages take the point's expansion
        point = point.replace(stages=point.stages[:1] + tuple(replace(s, expansion=0.0) for s in point.stages[1:]))
    with torch.device("meta"):
        model = build(point).eval()
    m = measures(point)
    assert (m.params, m.flops, m.acts) == hooked(model, 32)


@pytest.mark.parametrize("change, field", [
    (dict(kernels=(3, 3)), "stages[1].kernels"),
    (dict(padding="valid"), "stages[1].padding"),
])
def test_bad_stage_fields(change, field):
    point = zoo.get("efficientnet_b0_cifar")
    with pytest.raises(UserError, match=field.replace("[", r"\[").replace("]", r"\]")):  # refused where made
        point.replace(stages=point.stages[:1] + (replace(point.stages[1], **change),) + point.stages[2:])


@pytest.mark.parametrize("change, field", [(dict(attention="cbam"), "attention"), (dict(dropout=0.1), "dropout")])
def test_bad_point_fields(change, field):
    with pytest.raises(UserError, match=f"^{field}:"):
        measures(zoo.get("efficientnet_b0_cifar").replace(**change))
