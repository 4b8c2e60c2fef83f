"""Activations and receptive field from dse.cost.measures, held equal to measurements on the built module.

Activations (pycls's convention): forward hooks sum the output elements of every Conv1d, Conv2d and Linear and
every non-global pool (MaxPool2d, AvgPool2d; adaptive pools only when their output is larger than 1 x 1), once
per call, so a module called twice (CBAM's channel MLP) counts twice. Large points run on the meta device
(hooks see meta tensors' shapes, so a full-size ImageNet net costs milliseconds); small ones (under 3M params
and 300M multiply-adds) build and run faster on the CPU.

Receptive field: the support of the input gradient of one central unit of the last feature map
(`model.features`), summed over that unit's channels (so a net whose channels see different regions, a
concatenation or a channel split, is measured by its widest channel, as the analytic union rule counts it).
To make the gradient nonzero exactly where the unit can see, the module is made linear and positive: float64,
eval mode (dropout and drop-path off), conv weights 1/fan-in, biases 0, activations replaced by the identity
(pointwise, so they never change a field, and a saturated relu6 or sigmoid would zero the gradient), max-pools
replaced by average pools of the same geometry, and every norm (BatchNorm2d, LayerNorm2d) replaced by a division
by the tensor's detached maximum (the identity up to a positive constant, which keeps values near 1 through
deep residual stacks and CBAM's product gate). float32 underflows at the field's edge in deep nets (STACK.md).
With these weights each Conv2d computes the mean of its group's input channels under one k x k window average,
so it runs as exactly that (MeanConv: one call, where a float64 depthwise conv runs group by group on the CPU).
Global-context gates (SE, ECA, CBAM's channel branch, SK's and Splat's attention weights, EfficientNet's
squeeze-excite) see the whole image by design and the analytic rule leaves them out, so the measurement
detaches them: forward hooks return `output.detach()` from the first layer of each gate path. CBAM's spatial
gate (a 7 x 7 conv on the block's output) stays: it widens the field, and the analytic rule counts it.

The input is a strip: about four strides longer than the field along rows, and only as wide as the net needs to
keep a last map at least 1 unit wide. The unit u is the one whose field (with its neighbour's) lies most
centrally, and both must lie at least a stride from the border. Every window in dse is a k x k square
whose rows and columns are independent, and each window keeps at least one real pixel, so a unit's row support
does not depend on the image's width (test_strip_equals_square checks this on square inputs, rows and columns).
One forward and two backward passes give the central unit u and its neighbour u + 1: the size of u's support
(max - min + 1 of the nonzero rows), its first row (the analytic field's start), and the shift between the two
supports (the field's stride, the product of the strides).
"""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import EcaModule, SEModule, SplitAttn
from timm.layers.cbam import ChannelAttn
from timm.layers.selective_kernel import SelectiveKernelAttn
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn

import dse.zoo as zoo
from dse.cost import measures
from dse.families import net
from dse.graph.build import Scale
from dse.graph.build import build as build_graph
from dse.graph.count import State, measure, step
from dse.graph.nodes import (Act, Add, Attention, Concat, Conv, GlobalPool, LayerScale, Linear, Net, Norm, Pool, Seq,
                             Shuffle, Slice)
from dse.network import build
from dse.point import Point, Stage, Stem
from dse.space import load, names
from dse.zoo.residual import resnet_cifar, resnext_cifar

import represent  # tests/represent.py

NAMES = zoo.names()
SPACES = names()
ACTS_POINTS, FIELD_POINTS = 50, 20  # random points per space (seeds 0, 1, ...)
DEFAULT_POINTS = 5  # of those, the first seeds run by default; the rest under -m sweep (tests/represent.py)
FIELD_LIMIT = 512  # px: the issue asks for the measured field of every named point below it
SMALL_PARAMS, SMALL_FLOPS = 3e6, 3e8  # points this small count activations faster on the CPU than on meta

COUNTED = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d)
ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)  # BatchNormAct2d, dse's BatchNorm and LayerNorm2d included
ACT_MODULES = ("torch.nn.modules.activation", "timm.layers.activations", "timm.layers.activations_me")
GATES = {SEModule: "fc1", EcaModule: "conv", ChannelAttn: "fc1", SplitAttn: "fc1", SqueezeExcite: "conv_reduce"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def hooked_acts(model: nn.Module, in_chans: int, size: int, kinds: tuple = COUNTED + ADAPTIVE) -> int:
    """Output elements of every call of a conv, linear or non-global pool (of `kinds`), for one image."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if not isinstance(module, ADAPTIVE) or output.shape[-1] * output.shape[-2] > 1:
            total += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.empty(1, in_chans, size, size, device=device))
    for handle in handles:
        handle.remove()
    return total


def built_acts(point: Point) -> int:
    """hooked_acts of the point built at its own geometry: on the CPU when it is small, else on the meta device."""
    m = measures(point)
    with torch.device("cpu" if m.params < SMALL_PARAMS and m.flops < SMALL_FLOPS else "meta"):
        model = build(point).eval()
    return hooked_acts(model, point.in_chans, point.image_size)


@pytest.mark.parametrize("name", represent.named(NAMES))  # a feature cover by default, the rest -m sweep
def test_acts_named_points(name):
    point = zoo.get(name)
    assert measures(point).acts == built_acts(point)


@functools.cache
def drawn(space: str) -> tuple[Point, ...]:
    """The space's random points of seeds 0 ... ACTS_POINTS - 1 (counting only, no torch): drawn once per run."""
    s = load(space)
    return tuple(s.sample(seed) for seed in range(max(ACTS_POINTS, FIELD_POINTS)))


@pytest.mark.parametrize("space, first, stop", represent.seeded(SPACES, ACTS_POINTS, DEFAULT_POINTS))
def test_acts_random_points(space, first, stop):
    for seed, point in enumerate(drawn(space)[first:stop], first):
        assert measures(point).acts == built_acts(point), f"{space} seed {seed}: {point.to_json()}"


@pytest.mark.parametrize("space", SPACES)
def test_acts_random_points_are_varied(space):
    """The draws test_acts_random_points measures (all of them, default and sweep) are not nearly all one point."""
    ids = {point.id for point in drawn(space)[:ACTS_POINTS]}
    assert len(ids) > ACTS_POINTS // 5, f"{space}: the random points are nearly all the same"


def test_acts_pycls_resnet50():
    """pycls's published figure for ResNet-50; torchvision's model gives it only with the stem max-pool counted."""
    import torchvision

    assert measures(zoo.get("resnet50")).acts == 11_315_688
    with torch.device("meta"):
        ref = torchvision.models.resnet50().eval()
    assert hooked_acts(ref, 3, 224) == 11_315_688
    assert hooked_acts(ref, 3, 224, (nn.Conv2d, nn.Linear)) == 11_114_984


@pytest.mark.parametrize("reference, acts", [("timm:regnetx_002", 2_164_056), ("timm:regnety_002", 2_168_052),
                                             ("timm:regnetx_016", 7_933_512), ("timm:efficientnet_b0", 6_748_036)])
def test_acts_pycls_goldens(reference, acts):
    """pycls's activations (224 px, 1000 classes) for the named point that stands for the library model."""
    named = [n for n in NAMES if zoo.reference(n) == reference]
    if not named:
        pytest.skip(f"no named point references {reference} yet")
    assert measures(zoo.get(named[0]), image_size=224, in_chans=3, num_classes=1000).acts == acts


# --- receptive field --------------------------------------------------------------------------------------------


class Rescale(nn.Module):
    """x divided by its detached per-image maximum: the identity up to a positive constant (a norm's stand-in)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.detach().amax(dim=tuple(range(1, x.dim())), keepdim=True)


def _detach(module, inputs, output):
    return output.detach()


def _replacement(m: nn.Module) -> nn.Module | None:
    """The stand-in for a norm, a max-pool, an activation or a conv; None to keep `m`."""
    if isinstance(m, NORMS):
        return Rescale()
    if isinstance(m, nn.MaxPool2d):
        assert m.dilation in (1, (1, 1)), m
        return nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode)
    if type(m).__module__ in ACT_MODULES:
        return nn.Identity()
    if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        return MeanConv(m)
    return None


class MeanConv(nn.Module):
    """An nn.Conv2d with all weights 1/fan-in and no bias, computed exactly in one call: the mean of each group's
    input channels, one k x k window average (the conv's stride, padding and dilation), repeated over the
    group's outputs. (float64 convs have no fast path on the CPU: a depthwise one runs group by group.)
    The window average is avg_pool2d with zero padding counted, or for dilated convs a one-channel conv."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.groups, self.out = conv.groups, conv.out_channels
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.pooled = self.dilation == (1, 1) and all(2 * p <= k for p, k in zip(self.padding, conv.kernel_size))
        self.window = torch.full((1, 1, *conv.kernel_size), 1.0 / math.prod(conv.kernel_size), dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        mean = x.reshape(n, g, c // g, h, w).mean(2)
        if self.pooled:  # the same window average, a native float64 kernel
            y = F.avg_pool2d(mean, self.window.shape[-2:], self.stride, self.padding, count_include_pad=True)
        else:
            y = F.conv2d(mean.reshape(n * g, 1, h, w), self.window, None, self.stride, self.padding, self.dilation)
        h, w = y.shape[-2:]
        return y.view(n, g, 1, h, w).expand(n, g, self.out // g, h, w).reshape(n, self.out, h, w)


def field_model(graph: Net) -> nn.Module:
    """The built graph made linear and positive for measuring its field (see the module docstring).

    Built on the meta device and given memory once the convs are stand-ins: no initialising of weights that
    are overwritten anyway (regnety_320 has 145M)."""
    with torch.device("meta"):
        model = build_graph(graph).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _replacement(child)
            if new is not None:
                setattr(parent, name, new)
    model = model.to_empty(device="cpu").double().requires_grad_(False)
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.weight.fill_(1.0 / m.weight[0].numel())
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, Scale):
            m.gamma.fill_(1.0)
        else:
            left = [n for n, _ in (*m.named_parameters(recurse=False), *m.named_buffers(recurse=False))]
            assert not left, f"{type(m).__name__}: no value set for {left}"
        if isinstance(m, SelectiveKernelAttn):
            m.register_forward_hook(_detach)
        for cls, gate in GATES.items():
            if isinstance(m, cls):
                getattr(m, gate).register_forward_hook(_detach)
    return model


def counted_at(graph: Net, h: int, w: int) -> State:
    """The analytic state at the last feature map for an h x w input."""
    return step(graph.features, State(0, 0, 0, graph.in_chans, h, w))


def _valid(graph: Net, h: int, w: int) -> State | None:
    try:
        s = counted_at(graph, h, w)
    except Exception:  # a size too small for the net (a 'valid' conv on nothing, a branch size mismatch)
        return None
    return s if s.h >= 1 and s.w >= 1 else None


def strip(graph: Net) -> tuple[int, int, int]:
    """(rows, columns, u): a strip about 4 strides longer than the field, and the unit u whose field and its
    neighbour's lie most centrally in it, at least one stride from the border; columns: the fewest that leave
    a last map (found by doubling, then halving the step: the output never shrinks as the input grows)."""
    m = measure(graph)
    r, j = m.rf, m.rf_stride
    rows = r + 4 * j
    hi = 1
    while not _valid(graph, rows, hi):
        hi *= 2
        assert hi <= 4096, f"no strip {rows} rows long leaves a last map"
    lo = hi // 2  # invalid (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _valid(graph, rows, mid) else (mid, hi)
    for rows in range(rows, rows + 4 * j):
        s = _valid(graph, rows, hi)
        u = round(((rows - r - j) / 2 - s.start) / j)  # first row of u's field at the centre less half of r + j
        first, last = s.start + u * j, s.start + (u + 1) * j + r - 1
        if 0 <= u < s.h - 1 and first >= j and last <= rows - 1 - j:
            return rows, hi, u
    raise AssertionError(f"no strip holds the field ({r} px, stride {j})")


def _support(grad: torch.Tensor, dim: int) -> tuple[int, int]:
    """First and last index along `dim` (2: rows, 3: columns) where the gradient is nonzero."""
    other = 3 if dim == 2 else 2
    nonzero = torch.nonzero(grad.abs().sum((0, 1, other))).flatten()
    assert len(nonzero), "the gradient is zero everywhere"
    return int(nonzero.min()), int(nonzero.max())


def measured_field(graph: Net, rows: int, columns: int, u: int, v: int | None = None) -> dict:
    """Supports of units (u, v) and (u + 1, v) of the last feature map on a rows x columns input of ones."""
    model = field_model(graph)
    x = torch.ones(1, graph.in_chans, rows, columns, dtype=torch.float64, requires_grad=True)
    out = model.features(x)
    v = out.shape[3] // 2 if v is None else v
    spans = []
    for unit in (u, u + 1):
        (grad,) = torch.autograd.grad(out[0, :, unit, v].sum(), x, retain_graph=unit == u)
        spans.append((_support(grad, 2), _support(grad, 3)))
    return dict(shape=tuple(out.shape[2:]), rows=spans[0][0], columns=spans[0][1], next_rows=spans[1][0])


def check_field(point: Point | Net) -> None:
    """The measured size, position and stride of the central unit's field equal the analytic ones."""
    graph = net(point) if isinstance(point, Point) else point
    m = measure(graph)
    rows, columns, u = strip(graph)
    s = counted_at(graph, rows, columns)
    got = measured_field(graph, rows, columns, u)
    assert got["shape"] == (s.h, s.w)
    (first, last), (next_first, next_last) = got["rows"], got["next_rows"]
    assert first > 0 and next_last < rows - 1, f"the field touches the border of a {rows}-row input: {got}"
    assert (last - first + 1, next_first - first, next_last - last) == (m.rf, m.rf_stride, m.rf_stride), got
    assert first == s.start + u * m.rf_stride  # where the field starts (padding offsets)


# Every named point: the issue asks for those under 512 px, and the measurement is cheap enough for all but one.
# Nets hundreds of layers deep underflow even in float64 at the field's edge: one path reaches it, and on a
# 1-wide strip its weight shrinks by 1/9 at each 3x3 conv; preact_resnet1001's 333 of them make 1e-318, at
# float64's limit (its 1,551 px field measures 1,131 there, with the right stride and centre).
UNDERFLOW = {"preact_resnet1001"}
FIELD_NAMES = [n for n in NAMES if n not in UNDERFLOW]


def test_only_fields_over_512_px_are_left_out():
    assert all(measures(zoo.get(n)).rf >= FIELD_LIMIT for n in UNDERFLOW)


@pytest.mark.parametrize("name", represent.named(FIELD_NAMES))  # a feature cover by default, the rest -m sweep
def test_field_named_points(name):
    check_field(zoo.get(name))


@pytest.mark.parametrize("space, first, stop", represent.seeded(SPACES, FIELD_POINTS, DEFAULT_POINTS))
def test_field_random_points(space, first, stop):
    for seed, point in enumerate(drawn(space)[first:stop], first):
        try:
            check_field(point)
        except AssertionError as exc:
            raise AssertionError(f"{space} seed {seed}: {point.to_json()}\n{exc}") from None


def _edge_cases() -> dict[str, Point]:
    """Small points whose fields need care: valid padding and even kernels, pools, stems with odd padding,
    option-A skips, every attention on basic and bottleneck blocks, SK's dilations, depthwise blocks."""
    basic, bottleneck = resnet_cifar(8), resnext_cifar(11, 4, 8)
    out = {f"basic-{a}": basic.replace(attention=a) for a in ("se", "eca", "cbam", "sk", "splat")}
    out.update({f"bottleneck-{a}": bottleneck.replace(attention=a) for a in ("cbam", "sk", "splat")})
    out.update({
        "plain-valid-even": Point((Stage("plain", 2, 8, 2, kernels=(3, 1), padding="valid", pool="max3"),
                                   Stage("plain", 1, 8, kernels=(2,), padding="valid", pool="avg2"),
                                   Stage("plain", 1, 8, 1, kernels=(4,), padding="valid", pool="max3_valid")),
                                  skip="none", image_size=64),  # its map vanishes below 55 px
        "plain-stem-5x5-pad0-max2": Point((Stage("plain", 2, 8, kernels=(5, 3), pool="max2"),),
                                          stem=Stem("conv", 8, 5, 2, padding=0, pool="max3"), skip="none"),
        "plain-stem-4x4-pool-max3-valid": Point((Stage("plain", 1, 8, 2, kernels=(3,), padding="valid"),),
                                                stem=Stem("conv", 8, 4, 2, pool="max3_valid"), skip="none"),
        "option-a-narrowing": Point((Stage("basic", 1, 32), Stage("basic", 2, 16, stride=2)), skip="identity"),
        "basic-5x5-sk": Point((Stage("basic", 1, 32, 2, kernels=(5, 3)),), attention="sk"),
        "basic-13-sk-stride2": Point((Stage("basic", 2, 32, 2, kernels=(1, 3)),), attention="sk"),
        "basic-7x7-cbam-stride2": Point((Stage("basic", 2, 16, kernels=(7, 3)), Stage("basic", 1, 32, 2)),
                                        attention="cbam"),
        "inverted-5x5": Point((Stage("inverted", 2, 16, 2, kernels=(5,)), Stage("dwsep", 1, 32, 2)),
                              stem=Stem("conv", 16, 3, 2)),
    })
    return out


EDGE = _edge_cases()


@pytest.mark.parametrize("name", sorted(EDGE))
def test_field_edge_cases(name):
    check_field(EDGE[name])


def _shuffle_unit(cin: int, cout: int, stride: int) -> Seq:
    """A ShuffleNet V2 unit by hand: channel split (stride 1) or two strided branches, concat, shuffle."""
    h = cout // 2
    branch = (Conv(h if stride == 1 else cin, h), Norm(h), Act("relu"), Conv(h, h, 3, stride, groups=h), Norm(h),
              Conv(h, h), Norm(h), Act("relu"))
    if stride == 1:
        return Seq((Concat((Seq((Slice(0, h),)), Seq((Slice(h, cout), *branch)))), Shuffle(2)))
    side = (Conv(cin, cin, 3, 2, groups=cin), Norm(cin), Conv(cin, h), Norm(h), Act("relu"))
    return Seq((Concat((Seq(side), Seq(branch))), Shuffle(2)))


def _mbconv(c: int, kernel: int, stride: int) -> Seq:
    """An MBConv by hand: 1x1 expand, k x k depthwise, EfficientNet's squeeze-excite, 1x1 project."""
    m = 4 * c
    return Seq((Conv(c, m), Norm(m), Act("silu"), Conv(m, m, kernel, stride, groups=m), Norm(m), Act("silu"),
                Attention("se_mb", m, m, rd=c // 4, act="silu"), Conv(m, c), Norm(c)))


def hand_made(size: int) -> Net:
    """Node types that no family used when this test was written: channel split and shuffle, se_mb, layer
    scale, a dilated conv, a layer norm."""
    features = Seq((Conv(3, 24, 3, 2), Norm(24), Act("relu"), Pool("max", 3, 2, 1), _shuffle_unit(24, 48, 2),
                    _shuffle_unit(48, 48, 1), _shuffle_unit(48, 96, 2), _shuffle_unit(96, 96, 1), _mbconv(96, 5, 1),
                    Add((Seq((*_mbconv(96, 3, 1).nodes, LayerScale(96))), Seq())), _mbconv(96, 5, 2),
                    Conv(96, 96, 3, 1, groups=96, dilation=2), Norm(96, "ln")))
    return Net(3, size, features, Seq((GlobalPool(), Linear(96, 10))))


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, dilation, groups",
                         [(6, 4, 3, 1, 1, 1, 1), (8, 8, 5, 2, 2, 1, 8), (12, 6, 3, 2, 2, 2, 3), (4, 8, 2, 2, 0, 1, 2),
                          (4, 4, 3, 1, 2, 1, 1)])
def test_mean_conv_is_the_filled_conv(cin, cout, kernel, stride, padding, dilation, groups):
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=False).double()
    with torch.no_grad():
        conv.weight.fill_(1.0 / conv.weight[0].numel())
    x = torch.rand(2, cin, 13, 11, dtype=torch.float64)
    torch.testing.assert_close(MeanConv(conv)(x), conv(x))


@pytest.mark.parametrize("size", [64, 33])
def test_hand_made_graph(size):
    graph = hand_made(size)
    assert measure(graph).acts == hooked_acts(build_graph(graph).eval(), 3, size)
    check_field(graph)


@pytest.mark.parametrize("name", ["alexnet", "resnet20", "inception_cifar", "basic-cbam",
                                  "basic-5x5-sk", "plain-valid-even", "option-a-narrowing"])
def test_strip_equals_square(name):
    """On a square input, the central unit's rows and columns span the field the strip measures."""
    graph = net(EDGE.get(name) or zoo.get(name))
    m = measure(graph)
    rows, _, u = strip(graph)
    s = counted_at(graph, rows, rows)
    got = measured_field(graph, rows, rows, u, u)
    assert got["shape"] == (s.h, s.w)
    for first, last in (got["rows"], got["columns"]):
        assert (last - first + 1, first) == (m.rf, s.start + u * m.rf_stride)


@pytest.mark.parametrize("name, field", [("vgg16", 212), ("alexnet", 195), ("resnet18", 435), ("resnet34", 899),
                                         ("resnet50", 427)])
def test_known_fields(name, field):
    """Araujo et al.'s and STACK.md's measured fields; all five have stride 32."""
    m = measures(zoo.get(name))
    assert (m.rf, m.rf_stride) == (field, 32)


def test_field_of_attention_kinds():
    """Global gates (SE, ECA, Splat's) leave a block's field as it is; CBAM's 7 x 7 spatial gate widens it by 6
    units at the block's output; SK's second path (a 3 x 3 conv dilated by 2) acts as a 5 x 5 conv."""
    base = resnet_cifar(8)  # one basic block per stage; fields: stem 3, stages at strides 1, 2, 4
    plain = measures(base).rf
    assert [measures(base.replace(attention=a)).rf for a in ("se", "eca", "splat")] == [plain] * 3
    assert measures(base.replace(attention="cbam")).rf == plain + 6 * (1 + 2 + 4)
    assert measures(base.replace(attention="sk")).rf == plain + 2 * (1 + 1 + 2)  # at each block's input stride

