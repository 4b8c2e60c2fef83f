"""Named inception points: torchvision's GoogLeNet and a smaller GoogLeNet for CIFAR.

Branch widths per module are (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj). Like torchvision, the
"5x5" branch uses a 3x3 conv (kernels (3, 3)), so parameters equal torchvision's googlenet.
"""
from __future__ import annotations

from dse.point import Head, Point, Stage, Stem

IMAGENET = dict(image_size=224, in_chans=3, num_classes=1000)
CIFAR = dict(image_size=32, in_chans=3, num_classes=10)

GOOGLENET_3 = ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64))
GOOGLENET_4 = ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
               (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128))
GOOGLENET_5 = ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128))


def _inception(branches, pool: str = "none", kernels=(3, 3)) -> Stage:
    """One inception stage with a module per width tuple."""
    return Stage("inception", len(branches), kernels=kernels, pool=pool, branches=tuple(branches))


def googlenet() -> Point:
    """torchvision googlenet(aux_logits=False): 7x7/2 stem + pool, 1x1 64, 3x3 192 + pool, 3a-b, 4a-e, 5a-b."""
    stages = (Stage("plain", 1, 64, kernels=(1,)), Stage("plain", 1, 192, pool="max3"),
              _inception(GOOGLENET_3, "max3"), _inception(GOOGLENET_4, "max3"), _inception(GOOGLENET_5))
    return Point(stages, stem=Stem("conv", 64, 7, 2, pool="max3"), head=Head(dropout=0.2), skip="none", **IMAGENET)


def _halve(branches) -> tuple[tuple[int, ...], ...]:
    """Every width halved (at least 8)."""
    return tuple(tuple(max(8, w // 2) for w in b) for b in branches)


def inception_cifar() -> Point:
    """A small GoogLeNet for 32 px: 3x3 stem 64, modules 3a-b, 4a-b, 5a-b at half width, two max-pools."""
    stages = (_inception(_halve(GOOGLENET_3), "max3"), _inception(_halve(GOOGLENET_4[:2]), "max3"),
              _inception(_halve(GOOGLENET_5)))
    return Point(stages, stem=Stem("conv", 64, 3), skip="none", **CIFAR)


POINTS: dict[str, Point] = {
    "googlenet": googlenet(),
    "inception_cifar": inception_cifar(),
}

REFERENCES = {"googlenet": "torchvision:googlenet"}
REFERENCE_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False}}
