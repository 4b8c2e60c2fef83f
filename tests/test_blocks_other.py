"""Dense, inception and mobile (dwsep / inverted) blocks: builds, trains a step, counts equal the module exactly.

Full-geometry counts of these named points equal the meta-device module in tests/test_zoo.py
(test_counts_equal_built_module_at_full_geometry). Forward/backward runs on CPU at a small
image size on each named point cut to at most 3 blocks per stage (DenseNet-BC-190 has 93 layers per stage;
tests/test_zoo.py trains the full named points). Library references are built with REFERENCE_KWARGS
(googlenet without its auxiliary heads).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dse.graph.build import Sum
from dse.network import build
from dse.cost import complexity
from dse.errors import UserError
from dse.point import Point, Stage, Stem
from dse.zoo import dense, inception, mobile

import represent  # tests/represent.py

TABLES = (dense, inception, mobile)
POINTS = {name: p.replace(name=name) for t in TABLES for name, p in t.POINTS.items()}
REFERENCES = {name: (ref, getattr(t, "REFERENCE_KWARGS", {}).get(name, {}))
              for t in TABLES for name, ref in t.REFERENCES.items()}
PAPER = yaml.safe_load((Path(__file__).parents[1] / "dse/data/paper_params.yaml").read_text())


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def measured(model: nn.Module, size: int, in_chans: int, device: str = "meta", batch: int = 1):
    """(params, multiply-adds per image, output) of one forward pass: FlopCounterMode total / 2."""
    x = torch.randn(batch, in_chans, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // (2 * batch), out


def meta_build(point: Point, **kw) -> nn.Module:
    """The point built on the meta device, in eval mode."""
    with torch.device("meta"):
        return build(point, **kw).eval()


def train_step(point: Point, size: int) -> None:
    """Counts equal the CPU module at `size`; a backward pass gives finite grads everywhere."""
    torch.manual_seed(0)
    model = build(point, image_size=size).train()
    params, macs, out = measured(model, size, point.in_chans, device="cpu", batch=2)
    assert tuple(out.shape) == (2, point.num_classes)
    assert complexity(point, image_size=size) == (params, macs)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def shallow(point: Point, blocks: int = 3) -> Point:
    """`point` with at most `blocks` blocks (inception modules) per stage."""
    stages = tuple(Stage(**{**s.__dict__, "depth": min(s.depth, blocks), "branches": s.branches[:blocks]})
                   for s in point.stages)
    return point.replace(stages=stages)


@pytest.mark.parametrize("name", represent.named(sorted(POINTS)))  # a feature cover by default, the rest -m sweep
def test_forward_backward(name):
    point = shallow(POINTS[name])
    assert [s.depth for s in point.stages] == [min(s.depth, 3) for s in POINTS[name].stages]
    train_step(point, 32 if point.image_size == 224 else 16)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_models(name):
    """Params and multiply-adds at 224 px equal the torchvision/timm model exactly."""
    import timm
    import torchvision

    ref, kwargs = REFERENCES[name]
    lib, fn = ref.split(":")
    with torch.device("meta"):
        model = getattr(torchvision.models, fn)(**kwargs) if lib == "torchvision" else timm.create_model(fn, **kwargs)
    params, macs, _ = measured(model.eval(), 224, 3)
    assert tuple(complexity(POINTS[name], image_size=224, in_chans=3, num_classes=1000)) == (params, macs)


@pytest.mark.parametrize("name", sorted(set(PAPER) & set(POINTS)))
def test_paper_params(name):
    """DenseNet README counts: ours rounded to the printed precision equals the printed number."""
    digits = str(PAPER[name]["printed"]).rstrip("M")
    decimals = len(digits.partition(".")[2])
    assert round(complexity(POINTS[name]).params / 1e6, decimals) == float(digits)


def _layers(model: nn.Module) -> list[tuple]:
    """Convs, norms, activations and linears in registration order, described by their shapes."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            out.append(("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups))
        elif isinstance(m, nn.BatchNorm2d):
            out.append(("bn", m.num_features))
        elif isinstance(m, (nn.ReLU, nn.ReLU6, nn.Linear)):
            out.append((type(m).__name__,))
    return out


def test_mobilenet_v2_has_torchvision_layers_in_order():
    import torchvision

    with torch.device("meta"):
        ref = torchvision.models.mobilenet_v2()
    assert _layers(meta_build(POINTS["mobilenet_v2"])) == _layers(ref)


def test_named_numbers():
    assert complexity(POINTS["densenet121"]) == (7_978_856, 2_834_161_664)
    assert complexity(POINTS["googlenet"]).params == 6_624_904
    assert complexity(POINTS["mobilenet_v1"]) == (4_231_976, 568_740_352)  # paper: 4.2M, 569M mult-adds
    assert complexity(POINTS["mobilenet_v2"]).params == 3_504_872


# ----- feature variants: every switch of the three families, counted and trained at odd sizes -----
def _dense(**kw) -> Point:
    stages = (Stage("dense", 2, pool="avg2", kernels=kw.pop("kernels", (3,))), Stage("dense", 2))
    return Point(stages, stem=Stem("conv_bare", 8, 3), skip="dense", growth_rate=4, **kw)


def _mobile(block: str, skip: str, **kw) -> Point:
    kernels = kw.pop("kernels", (3,))
    stages = (Stage(block, 2, 8, 1, kernels), Stage(block, 2, 16, 2, kernels), Stage(block, 1, 16, 1, kernels))
    return Point(stages, stem=Stem("conv", 4, 3), skip=skip, **kw)


VARIANTS = {
    "dense_plain": _dense(),
    "dense_bc_dropout": _dense(dense_bottleneck=4, compression=0.5, dropout=0.2),
    "dense_two_kernels": _dense(kernels=(1, 3), compression=0.7),
    "inception_kernels_3_5": Point((Stage("inception", 2, kernels=(3, 5), pool="max3",
                                          branches=((4, 4, 8, 2, 4, 4), (8, 4, 8, 2, 4, 4))),
                                    Stage("inception", 1, branches=((4, 2, 4, 2, 4, 4),))),
                                   stem=Stem("conv", 8, 3), skip="none", dropout=0.1),
    "dwsep_plain": _mobile("dwsep", "none"),
    "dwsep_identity": _mobile("dwsep", "identity", drop_path=0.2),
    "dwsep_projection_se": _mobile("dwsep", "projection", kernels=(3, 5), attention="se", attn_ratio=0.25),
    "inverted_identity_eca": _mobile("inverted", "identity", expansion=2.5, attention="eca"),
    "inverted_projection_cbam": _mobile("inverted", "projection", expansion=1.0, attention="cbam", dropout=0.1),
    "inverted_plain_5x5": _mobile("inverted", "none", kernels=(5,), act="hard_swish", norm="none"),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("size", [15, 22])
def test_variants_count_and_train(name, size):
    train_step(VARIANTS[name], size)


def test_dense_layers_concatenate_and_transitions_compress():
    point = _dense(dense_bottleneck=4, compression=0.5)
    model = build(point)
    stage = model.features[1]  # features: the stem, then the stages
    feats = stage[0](torch.randn(1, 8, 8, 8))
    assert feats.shape[1] == 8 + 4
    assert model.features[1:](torch.randn(1, 8, 8, 8)).shape[1] == (8 + 2 * 4) // 2 + 2 * 4  # all stages


def test_shortcuts_follow_skip():
    """identity: only where the shape stays; projection: a 1x1 conv + norm where it changes; none: no add."""
    kinds = {}
    for skip in ("none", "identity", "projection"):
        model = build(_mobile("inverted", skip))
        kinds[skip] = [type(b.branches[1]).__name__ if isinstance(b, Sum) else "NoneType"  # no add: no shortcut
                       for s in model.features[1:] for b in s]
    assert kinds["none"] == ["NoneType"] * 5
    assert kinds["identity"] == ["NoneType", "Identity", "NoneType", "Identity", "Identity"]  # 4 -> 8 channels
    assert kinds["projection"] == ["Sequential", "Identity", "Sequential", "Identity", "Identity"]


def test_dwsep_without_skip_ends_in_act_and_with_skip_is_linear():
    plain, linear = build(_mobile("dwsep", "none")), build(_mobile("dwsep", "identity"))
    def branch(block):
        return block.branches[0] if isinstance(block, Sum) else block

    assert isinstance(branch(plain.features[1][0])[-1], nn.ReLU)
    assert isinstance(branch(linear.features[1][0])[-1], nn.BatchNorm2d)


# ----- user mistakes -----
def test_dense_growth_rate_must_be_positive():
    with pytest.raises(UserError, match="growth_rate"):
        _dense().replace(growth_rate=0)


@pytest.mark.parametrize("depth, bc", [(41, False), (4, False), (42, True), (102, True)])
def test_densenet_cifar_depth_must_fit_layout(depth, bc):
    with pytest.raises(UserError, match=f"depth: DenseNet{'-BC' if bc else ''} needs depth = {6 if bc else 3}N\\+4"):
        dense.densenet_cifar(depth, 12, bc=bc)


def test_densenet_cifar_valid_depths():
    assert [s.depth for s in dense.densenet_cifar(40, 12).stages] == [12, 12, 12]
    assert [s.depth for s in dense.densenet_cifar(100, 12, bc=True).stages] == [16, 16, 16]


@pytest.mark.parametrize("branches", [((4, 4, 8, 2, 4),), ((4, 4, 8, 2, 4, 4), (4, 4, 8, 2, 4, 4)),
                                      ((4, 0, 8, 2, 4, 4),)])
def test_bad_inception_branches(branches):
    with pytest.raises(UserError, match="branches"):
        Point((Stage("inception", 1, branches=branches),), skip="none")


@pytest.mark.parametrize("stage, message", [
    (Stage("dense", 2, stride=2), "stride: dense stages keep their resolution"),
    (Stage("inception", 1, stride=2, branches=((4, 4, 8, 2, 4, 4),)), "stride: inception stages"),
])
def test_concatenating_stages_reject_strides(stage, message):
    with pytest.raises(UserError, match=message):  # refused where the Point is made: never counted or built
        Point((stage,), skip="dense" if stage.block == "dense" else "none", growth_rate=4)


@pytest.mark.parametrize("block", ["dense", "dwsep", "inverted"])
def test_unsupported_attention(block):
    kind = "se" if block == "dense" else "sk"
    with pytest.raises(UserError, match=f"attention {kind!r} is not supported for block {block!r}; supported: "):
        _dense(attention=kind) if block == "dense" else _mobile(block, "identity", attention=kind)


def test_mobile_blocks_need_same_padding():
    with pytest.raises(UserError, match="padding: dwsep blocks need 'same' padding"):
        Point((Stage("dwsep", 1, 8, padding="valid"),), skip="none")


def test_mobilenet_v1_width_and_resolution():
    small = mobile.mobilenet_v1(0.5, 160)
    assert small.image_size == 160 and small.stem.width == 16 and small.stages[-1].width == 512
    assert complexity(small).params < complexity(POINTS["mobilenet_v1"]).params
    with pytest.raises(UserError, match="width_mult"):
        mobile.mobilenet_v1(0)
