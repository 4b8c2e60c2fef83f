"""Named dense points: DenseNet for CIFAR (Huang et al. 2017) and torchvision's DenseNet-121/169.

`densenet_cifar(depth, growth, bc)` builds the CIFAR layouts: 3 dense stages of (L-4)/3 layers (plain) or
(L-4)/6 bottleneck layers (-BC, compression 0.5), average-pool transitions between them.
"""
from __future__ import annotations

from dse.errors import UserError
from dse.point import Point, Stage, Stem

CIFAR = dict(image_size=32, in_chans=3, num_classes=10)
IMAGENET = dict(image_size=224, in_chans=3, num_classes=1000)
IMAGENET_LAYERS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}


def _stages(depths) -> tuple[Stage, ...]:
    """One dense stage per depth, an avg2 transition after every stage but the last."""
    last = len(depths) - 1
    return tuple(Stage("dense", d, pool="none" if i == last else "avg2") for i, d in enumerate(depths))


def densenet_cifar(depth: int, growth: int, bc: bool = False, dropout: float = 0.0) -> Point:
    """CIFAR DenseNet-L-k (3x3 layers, stem 16); with bc, DenseNet-BC-L-k (1x1-3x3, stem 2k, compression 0.5)."""
    per_layer = 6 if bc else 3
    if not isinstance(depth, int) or depth <= 4 or (depth - 4) % per_layer:
        raise UserError(f"depth: DenseNet{'-BC' if bc else ''} needs depth = {per_layer}N+4 with N >= 1, got {depth!r}")
    if not isinstance(growth, int) or growth < 1:
        raise UserError(f"growth: must be a positive integer, got {growth!r}")
    n = (depth - 4) // per_layer
    return Point(_stages((n,) * 3), stem=Stem("conv_bare", 2 * growth if bc else 16, 3), skip="dense",
                 growth_rate=growth, compression=0.5 if bc else 1.0, dense_bottleneck=4 if bc else 0,
                 dropout=dropout, **CIFAR)


def densenet_imagenet(depth: int, growth: int = 32, stem: int = 64) -> Point:
    """torchvision DenseNet-BC: 7x7/2 stem + 3x3/2 max-pool, bottleneck 4k layers, compression 0.5."""
    if depth not in IMAGENET_LAYERS:
        valid = ", ".join(map(str, IMAGENET_LAYERS))
        raise UserError(f"depth: {depth} is not an ImageNet DenseNet depth; valid: {valid}")
    return Point(_stages(IMAGENET_LAYERS[depth]), stem=Stem("conv", stem, 7, 2, pool="max3"), skip="dense",
                 growth_rate=growth, compression=0.5, dense_bottleneck=4, **IMAGENET)


POINTS: dict[str, Point] = {
    "densenet_40_12": densenet_cifar(40, 12),
    "densenet_100_12": densenet_cifar(100, 12),
    "densenet_100_24": densenet_cifar(100, 24),
    "densenet_bc_100_12": densenet_cifar(100, 12, bc=True),
    "densenet_bc_250_24": densenet_cifar(250, 24, bc=True),
    "densenet_bc_190_40": densenet_cifar(190, 40, bc=True),
    "densenet121": densenet_imagenet(121),
    "densenet169": densenet_imagenet(169),
    "densenet201": densenet_imagenet(201),
}

REFERENCES = {f"densenet{d}": f"torchvision:densenet{d}" for d in IMAGENET_LAYERS}
