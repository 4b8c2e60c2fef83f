"""RegNet X/Y through the family seam: the 24 named points equal timm's regnetx_/regnety_002 ... 320 at 224 px (timm's
default input size and the paper's) in params, multiply-adds and activations (forward hooks on timm's own models),
and our counts equal our built module (tests/test_zoo.py, test_measures.py); pycls's published activations; the same function as timm (its weights copied
in give its outputs, also at bottleneck ratio 1/2 where the SE's place matters); the quantized-linear width rule
equals timm's generator; the `regnet` space keeps four stages, gives timm's 200MF points at ImageNet size and trains a
step at Fashion-MNIST size; thinned points keep their groups; stages and points check their fields."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dse.zoo as zoo
from dse.cost import measures
from dse.errors import Infeasible, UserError
from dse.families.regnet import stage_widths
from dse.network import build
from dse.space import load
from dse.zoo.regnet import X, Y, regnet

NAMES = [n for n in zoo.names() if n.startswith("regnet") and not n.endswith("cifar")]
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# timm 1.0.31 at 224 px, measured by FlopCounterMode / 2 and forward hooks; ours are equal (test below)
TIMM = {  # name: (params, multiply-adds, activations)
    "regnetx_002": (2_684_792, 199_039_872, 2_164_056), "regnetx_004": (5_157_512, 397_677_568, 3_143_272),
    "regnetx_006": (6_196_040, 600_890_112, 3_975_096), "regnetx_008": (7_259_656, 799_699_712, 5_148_744),
    "regnetx_016": (9_190_136, 1_602_849_792, 7_933_512), "regnetx_032": (15_296_552, 3_176_621_952, 11_367_432),
    "regnetx_040": (22_118_248, 3_964_498_816, 12_201_608), "regnetx_064": (26_209_256, 6_460_291_264, 16_369_744),
    "regnetx_080": (39_572_648, 7_995_132_416, 14_059_688), "regnetx_120": (46_106_056, 12_086_678_016, 21_366_568),
    "regnetx_160": (54_278_536, 15_940_755_456, 25_515_496), "regnetx_320": (107_811_560, 31_735_929_792, 36_302_160),
    "regnety_002": (3_162_996, 199_514_080, 2_168_052), "regnety_004": (4_344_144, 401_842_848, 3_892_496),
    "regnety_006": (6_055_160, 601_220_992, 4_334_296), "regnety_008": (6_263_168, 797_176_832, 5_249_888),
    "regnety_016": (11_202_430, 1_612_076_160, 8_044_814), "regnety_032": (19_436_338, 3_176_482_752, 11_263_418),
    "regnety_040": (20_646_656, 3_973_288_448, 12_287_200), "regnety_064": (30_583_252, 6_355_204_992, 16_407_188),
    "regnety_080": (39_180_068, 7_963_057_312, 17_968_916), "regnety_120": (51_822_544, 12_092_376_576, 21_384_496),
    "regnety_160": (83_590_140, 15_911_510_272, 23_041_228), "regnety_320": (145_046_770, 32_279_552_832, 30_261_570),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def hooked(model: nn.Module, size: int, in_chans: int = 3) -> tuple[int, int, int]:
    """(params, multiply-adds, activations) of one image on the model's device: FlopCounterMode / 2, and output
    elements of every conv, linear and non-global pool (pycls's convention)."""
    acts = []

    def count(module, inputs, out):
        if not isinstance(module, POOLS) or out.shape[-1] * out.shape[-2] > 1:
            acts.append(out.numel())

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear) + POOLS)]
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, in_chans, size, size, device=device))
    for h in hooks:
        h.remove()
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2, sum(acts)


def timm_model(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False).eval()


def test_all_24_named_points():
    assert sorted(NAMES) == sorted(TIMM)
    assert [zoo.reference(n) for n in NAMES] == [f"timm:{n}" for n in NAMES]


@pytest.mark.parametrize("name", NAMES)
def test_named_points_equal_timm(name):
    point = zoo.get(name)
    assert point.image_size == 224
    with torch.device("meta"):  # regnety_320 has 145M params: shapes only
        theirs = timm_model(name)
    assert theirs.pretrained_cfg["input_size"][-1] == 224
    params, flops, acts = hooked(theirs, 224)
    m = measures(point)
    assert m.params == params == TIMM[name][0]
    assert abs(m.flops - flops) <= 0.005 * flops and m.flops == flops == TIMM[name][1]  # in fact equal
    assert m.acts == acts == TIMM[name][2]
    # Our counts equal our own built module at 224 px for every named point: tests/test_zoo.py
    # (test_counts_equal_built_module_at_full_geometry: params, multiply-adds) and tests/test_measures.py
    # (test_acts_named_points: activations, by the same hooks), so the module is not built here a second time.


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
        assert abs(TIMM[name][1] - nominal) < 0.1 * nominal, name


def randomized_norms(model: nn.Module) -> nn.Module:
    """Non-trivial norm statistics, so a swapped or misplaced channel would show in the output."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("case", ["regnetx_002", "regnety_002", "b_half_se"])
def test_same_function_as_timm(case):
    """timm's weights, copied into our module in order, give its outputs in eval mode at 64 px. At bottleneck ratio
    1/2 the 3x3 width differs from the stage width, so SE after the 3x3 conv and SE after the last 1x1 differ."""
    from timm.models.regnet import RegNet, RegNetCfg

    torch.manual_seed(0)
    if case == "b_half_se":
        theirs = RegNet(RegNetCfg(w0=24, wa=36.44, wm=2.49, depth=13, group_size=8, bottle_ratio=0.5, se_ratio=0.25),
                        num_classes=10, in_chans=1)
        point, in_chans = regnet(*Y["002"], se=True, b=0.5, image_size=64, num_classes=10), 1
    else:
        theirs, point, in_chans = timm_model(case), zoo.get(case), 3
    randomized_norms(theirs)
    ours = build(point, num_classes=point.num_classes, in_chans=in_chans, image_size=64).eval()
    source, target = list(theirs.state_dict().values()), list(ours.state_dict().values())
    assert [t.shape for t in source] == [t.shape for t in target]
    ours.load_state_dict(dict(zip(ours.state_dict(), source)))
    x = torch.randn(2, in_chans, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-4, rtol=1e-3)


def test_width_rule_equals_timms_generator():
    from timm.models.regnet import adjust_widths_groups_comp, generate_regnet

    rng = random.Random(0)
    for _ in range(200):
        w0, wa, wm = 8 * rng.randint(1, 40), rng.uniform(0, 120), rng.uniform(1.5, 3)
        d, g, b = rng.randint(6, 30), rng.choice([1, 8, 16, 24, 56]), rng.choice([1.0, 0.5, 0.25])
        widths, _, groups = generate_regnet(wa, w0, wm, d, g)
        uniq = sorted(set(widths))
        expect, _ = adjust_widths_groups_comp(uniq, [b] * len(uniq), groups)
        got, depths = stage_widths(w0, wa, wm, d, g, b)
        assert got == expect and depths == [widths.count(w) for w in uniq]
    for table in (X, Y):  # the named points' parameters give four stages, as in the paper
        assert all(len(stage_widths(*v)[0]) == 4 for v in table.values())


def test_space_defaults_and_timm_points_at_imagenet_size():
    space = load("regnet")
    assert space.point(space.default_values()).replace(name="") == zoo.get("regnety_cifar").replace(name="")
    imagenet = space.with_geometry(image_size=224, num_classes=1000)
    rule = dict(w0=24, wa=36.44, wm=2.49, d=13, group_w=8, b=1.0)
    assert imagenet.point({**rule, "se": "none"}).replace(name="") == zoo.get("regnetx_002").replace(name="")
    assert imagenet.point({**rule, "se": "se"}).replace(name="") == zoo.get("regnety_002").replace(name="")
    with pytest.raises(Infeasible, match="stages; the space keeps 4"):
        space.point({"w0": 8, "wa": 4.0, "wm": 3.0, "d": 6})


def test_space_admits_a_share_at_cifar_size():
    """About 30% of draws give four stages; most of those meet the 32 px constraints."""
    space, rng, four, feasible = load("regnet"), random.Random(0), 0, 0
    for _ in range(100):
        try:
            point = space.point(space.sample_values(rng))
        except Infeasible:
            continue
        four += 1
        feasible += not space.check(point)
        assert len(point.stages) == 4 and [s.width for s in point.stages] == sorted(s.width for s in point.stages)
    assert 15 <= feasible <= four <= 50


def test_space_at_fashion_mnist_size_trains_a_step():
    torch.manual_seed(0)
    point = load("regnet").sample(1, image_size=28, in_chans=1)
    assert point.stem.stride == 1 and len(point.stages) == 4
    model = build(point).train()
    assert sum(p.numel() for p in model.parameters()) == measures(point).params
    assert model.features(torch.randn(1, 1, 28, 28)).shape[-2:] == (2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.randint(0, 10, (4,)))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("factor", [0.5, 0.25, 0.125])
def test_thinned_points_keep_groups_dividing(factor):
    space = load("regnet")
    for point in (zoo.get("regnety_cifar"), zoo.get("regnetx_004"), space.sample(1), space.sample(2)):
        thin = point.thinned(factor).replace(image_size=32)
        assert thin.group_width == max(1, round(point.group_width * factor))
        for a, s in zip(point.stages, thin.stages):
            mid = round(s.width * thin.bottleneck_ratio)
            assert mid % min(thin.group_width, mid) == 0  # rounded up to the next width that fits the groups
            assert max(4, round(a.width * factor)) <= s.width < max(4, round(a.width * factor)) + 2 * thin.group_width
        with torch.device("meta"):
            model = build(thin).eval()
        m = measures(thin)
        assert (m.params, m.flops, m.acts) == hooked(model, 32)


def test_rule_inputs_are_bounded():
    with pytest.raises(UserError, match="0 < depth <= 128"):
        stage_widths(24, 36.0, 2.5, 10 ** 9, 8)
    with pytest.raises(UserError, match="w0 a positive multiple of 8"):
        stage_widths(25, 36.0, 2.5, 13, 8)


def test_group_width_must_divide():
    with pytest.raises(UserError, match="group_width: 7 does not divide"):  # refused where the Point is made
        zoo.get("regnetx_002").replace(group_width=7)


@pytest.mark.parametrize("change, field", [(dict(kernels=(3, 3)), r"stages\[1\]\.kernels"),
                                           (dict(padding="valid"), r"stages\[1\]\.padding")])
def test_bad_stage_fields(change, field):
    point = zoo.get("regnety_cifar")
    with pytest.raises(UserError, match=field):  # refused where the Point is made
        point.replace(stages=point.stages[:1] + (replace(point.stages[1], **change),) + point.stages[2:])


@pytest.mark.parametrize("change, field", [(dict(attention="cbam"), "attention"), (dict(dropout=0.1), "dropout"),
                                           (dict(group_width=0), "group_width")])
def test_bad_point_fields(change, field):
    with pytest.raises(UserError, match=f"^{field}:"):
        measures(zoo.get("regnety_cifar").replace(**change))


def test_other_kernels_and_norms_count_like_the_built_module():
    point = zoo.get("regnety_cifar")
    point = point.replace(stages=tuple(replace(s, kernels=(5,)) for s in point.stages), norm="none", act="silu",
                          drop_path=0.1)
    with torch.device("meta"):
        model = build(point).eval()
    m = measures(point)
    assert (m.params, m.flops, m.acts) == hooked(model, 32)
