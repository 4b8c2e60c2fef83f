"""Named ConvNeXt points (Liu et al., "A ConvNet for the 2020s", CVPR 2022): torchvision's convnext_tiny/small/base.

A 4x4/4 patchify stem with LayerNorm, four stages (the last three start with LayerNorm + a 2x2/2 conv),
blocks of 7x7 depthwise conv, LayerNorm, 1x1 to 4x, GELU, 1x1 back, layer scale 1e-6 and drop-path rising
linearly to the paper's rate; average pool, LayerNorm, linear.
"""
from __future__ import annotations

from dse.point import Head, Point, Stage, Stem

# name: (stage widths, stage depths, drop-path rate) from the paper's Table 9 / torchvision's builders
CONFIGS = {
    "convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
}


def convnext(widths, depths, drop_path: float = 0.0, image_size: int = 224, num_classes: int = 1000,
             patch: int = 4, kernel: int = 7) -> Point:
    """A ConvNeXt: `patch` x `patch` stem, stages of `depths` blocks at `widths`, downsampling by 2 between them."""
    stages = tuple(Stage("convnext", d, w, 1 if i == 0 else 2, kernels=(kernel,), expansion=4.0)
                   for i, (w, d) in enumerate(zip(widths, depths)))
    return Point(stages, stem=Stem("patch", widths[0], patch, patch, padding=0), head=Head(norm=True),
                 skip="identity", norm="ln", act="gelu", layer_scale=1e-6, drop_path=drop_path,
                 image_size=image_size, in_chans=3, num_classes=num_classes)


def convnext_cifar(widths=(48, 96, 192, 384), depths=(2, 2, 6, 2)) -> Point:
    """A CIFAR-size ConvNeXt: a 1x1 stem keeps 32 px (32 -> 16 -> 8 -> 4 over the stages), 10 classes."""
    return convnext(widths, depths, 0.1, image_size=32, num_classes=10, patch=1)


POINTS = {name: convnext(w, d, p) for name, (w, d, p) in CONFIGS.items()}
POINTS["convnext_cifar"] = convnext_cifar()
REFERENCES = {name: f"torchvision:{name}" for name in CONFIGS}
