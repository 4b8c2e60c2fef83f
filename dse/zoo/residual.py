"""Named residual points: ResNet (CIFAR and ImageNet), pre-act ResNet, Wide ResNet, ResNeXt, SE/ECA/CBAM/SK/ResNeSt.

The parametric constructors (`resnet_cifar`, `preact_cifar`, `wrn`, `resnext_cifar`, `resnet_imagenet`)
return Points and raise UserError for depths their family cannot have. Parameter counts include
BatchNorm's affine params (2 per channel); that is why preact_resnet1001 counts ~10.33M against the
paper's 10.2M (which matches the count without them), and why its paper check allows 2%.
"""
from __future__ import annotations

from dse.errors import UserError
from dse.point import Point, Stage, Stem

CIFAR = dict(image_size=32, in_chans=3, num_classes=10)
IMAGENET = dict(image_size=224, in_chans=3, num_classes=1000)
IMAGENET_STEM = Stem(type="conv", width=64, kernel=7, stride=2, pool="max3")
IMAGENET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _stages(block: str, depths, widths, kernels) -> tuple[Stage, ...]:
    """One stage per depth; the first keeps the resolution, the others halve it."""
    return tuple(Stage(block, d, w, 1 if i == 0 else 2, kernels) for i, (d, w) in enumerate(zip(depths, widths)))


def _blocks_per_stage(depth: int, per_block: int, extra: int, stages: int = 3) -> int:
    """N for depth = stages * per_block * N + extra, or a UserError naming the form."""
    step = stages * per_block
    if depth <= extra or (depth - extra) % step:
        raise UserError(f"depth: {depth} is not of the form {step}N+{extra}")
    return (depth - extra) // step


def resnet_imagenet(depth: int, cardinality: int = 1, width: int = 64, attention: str = "none",
                    attn_ratio: float = 1 / 16) -> Point:
    """torchvision-style ResNet/ResNeXt (7x7 stem, stride in the 3x3 conv); width = per-group d of stage 1."""
    if depth not in IMAGENET_LAYERS:
        valid = ", ".join(map(str, IMAGENET_LAYERS))
        raise UserError(f"depth: {depth} is not an ImageNet ResNet depth; valid: {valid}")
    if depth < 50:
        stages = _stages("basic", IMAGENET_LAYERS[depth], (64, 128, 256, 512), (3, 3))
    else:
        stages = _stages("bottleneck", IMAGENET_LAYERS[depth], (256, 512, 1024, 2048), (3,))
    return Point(stages, stem=IMAGENET_STEM, skip="projection", cardinality=cardinality, bottleneck_width=width,
                 attention=attention, attn_ratio=attn_ratio, **IMAGENET)


def resnet_cifar(depth: int, skip: str = "identity", drop_path: float = 0.0) -> Point:
    """He et al. CIFAR ResNet (6N+2 layers, 16/32/64 channels); skip 'none' gives the plain net."""
    n = _blocks_per_stage(depth, 2, 2)
    return Point(_stages("basic", (n,) * 3, (16, 32, 64), (3, 3)), stem=Stem("conv", 16, 3), skip=skip,
                 drop_path=drop_path, **CIFAR)


def preact_cifar(depth: int, bottleneck: bool | None = None) -> Point:
    """Pre-activation CIFAR ResNet: basic blocks (6N+2) or, from 164 layers on by default, bottlenecks (9N+2)."""
    if bottleneck is None:
        bottleneck = depth >= 164
    if bottleneck:
        n = _blocks_per_stage(depth, 3, 2)
        stages = _stages("preact_bottleneck", (n,) * 3, (64, 128, 256), (3,))
        return Point(stages, stem=Stem("conv_bare", 16, 3), skip="projection", bottleneck_width=16, **CIFAR)
    n = _blocks_per_stage(depth, 2, 2)
    return Point(_stages("preact_basic", (n,) * 3, (16, 32, 64), (3, 3)), stem=Stem("conv_bare", 16, 3),
                 skip="projection", **CIFAR)


def wrn(depth: int, k: int, dropout: float = 0.0) -> Point:
    """Wide ResNet WRN-depth-k (6N+4 layers counting the projection convs), dropout between the convs."""
    n = _blocks_per_stage(depth, 2, 4)
    if not isinstance(k, int) or k < 1:
        raise UserError(f"k: the widening factor must be a positive integer, got {k!r}")
    return Point(_stages("preact_basic", (n,) * 3, (16 * k, 32 * k, 64 * k), (3, 3)), stem=Stem("conv_bare", 16, 3),
                 skip="projection", dropout=dropout, **CIFAR)


def resnext_cifar(depth: int, cardinality: int, width: int) -> Point:
    """ResNeXt-29-style CIFAR net: 3x3 stem 64, bottlenecks to 256/512/1024, grouped width C*d doubling per stage."""
    n = _blocks_per_stage(depth, 3, 2)
    return Point(_stages("bottleneck", (n,) * 3, (256, 512, 1024), (3,)), stem=Stem("conv", 64, 3),
                 skip="projection", cardinality=cardinality, bottleneck_width=width, **CIFAR)


# ResNeXt Table 3: same ~4.1 GFLOPs budget at cardinality C and per-group width d.
RESNEXT_TABLE3 = ((1, 64), (2, 40), (4, 24), (8, 14), (32, 4))

POINTS: dict[str, Point] = {
    **{f"resnet{d}": resnet_imagenet(d) for d in IMAGENET_LAYERS},
    **{f"resnext50_{c}x{d}d": resnet_imagenet(50, c, d) for c, d in RESNEXT_TABLE3},
    **{f"resnext101_{c}x{d}d": resnet_imagenet(101, c, d) for c, d in RESNEXT_TABLE3[1:]},
    "resnext101_64x4d": resnet_imagenet(101, 64, 4),
    "wide_resnet50_2": resnet_imagenet(50, 1, 128),
    "seresnet50": resnet_imagenet(50, attention="se"),
    "seresnext50_32x4d": resnet_imagenet(50, 32, 4, attention="se"),
    "ecaresnet50": resnet_imagenet(50, attention="eca"),
    "cbamresnet50": resnet_imagenet(50, attention="cbam"),
    "skresnet18": resnet_imagenet(18, attention="sk", attn_ratio=1 / 8),  # timm: rd_ratio 1/8, divisor 16
    "resnest50": resnet_imagenet(50, attention="splat", attn_ratio=1 / 4),  # radix 2, plain 7x7 stem, no avd
    **{f"resnet{d}": resnet_cifar(d) for d in (20, 32, 44, 56, 110)},
    "resnet110_sd": resnet_cifar(110, drop_path=0.5),
    **{f"plain{d}": resnet_cifar(d, skip="none") for d in (20, 56)},
    **{f"preact_resnet{d}": preact_cifar(d) for d in (110, 164, 1001)},  # 1001: BN params counted (see above)
    **{f"wrn_{d}_{k}": wrn(d, k) for d, k in ((40, 1), (40, 2), (40, 4), (40, 8), (28, 10), (28, 12), (22, 8),
                                               (22, 10), (16, 8), (16, 10), (16, 4))},
    "resnext29_8x64d": resnext_cifar(29, 8, 64),
    "resnext29_16x64d": resnext_cifar(29, 16, 64),
}

REFERENCES = {
    **{f"resnet{d}": f"torchvision:resnet{d}" for d in IMAGENET_LAYERS},
    "resnext50_32x4d": "torchvision:resnext50_32x4d",
    "resnext101_32x4d": "timm:resnext101_32x4d",
    "resnext101_64x4d": "torchvision:resnext101_64x4d",
    "wide_resnet50_2": "torchvision:wide_resnet50_2",
    "seresnet50": "timm:seresnet50",
    "seresnext50_32x4d": "timm:seresnext50_32x4d",
    "skresnet18": "timm:skresnet18",
}
