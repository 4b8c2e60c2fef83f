"""Named mobile points: MobileNet-v1 (ImageNet, CIFAR), MobileNet-v2 (torchvision layout), Xception-like CIFAR net.

`mobilenet_v1(width_mult, image_size)` scales every width by the multiplier (rounded to a multiple of 8,
timm's rule) and sets the input resolution.
"""
from __future__ import annotations

from dse.channels import make_divisible
from dse.errors import UserError
from dse.point import Head, Point, Stage, Stem

CIFAR = dict(image_size=32, in_chans=3, num_classes=10)
# MobileNet-v1 body: (blocks, width, stride) per stage after the 32-wide stem
MOBILENET_V1 = ((1, 64, 1), (2, 128, 2), (2, 256, 2), (6, 512, 2), (2, 1024, 2))
# MobileNet-v2 inverted stages: (expansion, width, blocks, stride); the first (t=1) is a linear dwsep block
MOBILENET_V2 = ((6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v1(width_mult: float = 1.0, image_size: int = 224, num_classes: int = 1000) -> Point:
    """MobileNet-v1 (Howard et al. 2017): 3x3/2 stem 32, 13 depthwise-separable blocks, avg pool, fc."""
    if not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise UserError(f"width_mult: must be > 0, got {width_mult!r}")
    scale = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
    stages = tuple(Stage("dwsep", d, scale(w), s) for d, w, s in MOBILENET_V1)
    return Point(stages, stem=Stem("conv", scale(32), 3, 2), skip="none", image_size=image_size, in_chans=3,
                 num_classes=num_classes)


def mobilenet_v1_cifar() -> Point:
    """MobileNet-v1 for 32 px: stride-1 stem, the same 13 blocks (32 -> 2 px)."""
    stages = (Stage("dwsep", 1, 64), Stage("dwsep", 2, 128, 2), Stage("dwsep", 2, 256, 2), Stage("dwsep", 6, 512, 2),
              Stage("dwsep", 2, 1024, 2))
    return Point(stages, stem=Stem("conv", 32, 3), skip="none", **CIFAR)


def mobilenet_v2() -> Point:
    """torchvision MobileNet-v2 (width 1.0): 3x3/2 stem 32, linear dwsep 16, inverted stages, 1x1 1280, ReLU6."""
    stages = ((Stage("dwsep", 1, 16),)
              + tuple(Stage("inverted", n, c, s) for _, c, n, s in MOBILENET_V2)
              + (Stage("plain", 1, 1280, kernels=(1,)),))
    return Point(stages, stem=Stem("conv", 32, 3, 2), head=Head(dropout=0.2), skip="identity", expansion=6.0,
                 act="relu6", image_size=224, in_chans=3, num_classes=1000)


def xception_cifar() -> Point:
    """An Xception-like net for 32 px: residual dwsep blocks (two or three separable convs) with projections."""
    stages = (Stage("dwsep", 1, 128, 1, (3, 3)), Stage("dwsep", 1, 256, 2, (3, 3)), Stage("dwsep", 1, 512, 2, (3, 3)),
              Stage("dwsep", 4, 512, 1, (3, 3, 3)), Stage("dwsep", 1, 1024, 2, (3, 3)))
    return Point(stages, stem=Stem("conv", 64, 3), skip="projection", **CIFAR)


POINTS: dict[str, Point] = {
    "mobilenet_v1": mobilenet_v1(),
    "mobilenet_v1_cifar": mobilenet_v1_cifar(),
    "mobilenet_v2": mobilenet_v2(),
    "xception_cifar": xception_cifar(),
}

# timm's mobilenetv1_100 has the same convs (params and FLOPs equal) but uses ReLU6 where the paper uses ReLU
REFERENCES = {"mobilenet_v1": "timm:mobilenetv1_100", "mobilenet_v2": "torchvision:mobilenet_v2"}
