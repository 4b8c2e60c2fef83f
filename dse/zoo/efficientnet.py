"""Named EfficientNet points (Tan & Le, ICML 2019): timm's efficientnet_b0 ... efficientnet_b5.

B0 (the paper's Table 1): a 3x3/2 conv to 32, one depthwise-separable stage and six MBConv stages (expansion 6,
SE of a quarter of the block's input, SiLU), a 1x1 conv to 1280, average pool, dropout, linear. B1-B5 scale
every width by w (timm's round_channels: a multiple of 8, never 10% below), every stage's depth by d (rounded
up) and the resolution. Named points carry the paper's resolution (timm's default input for B3 is 288 px, the
paper's 300) and the paper's dropout and drop-path rate 0.2 (dse's rate rises linearly to 0.2 at the last block;
timm's drop_path_rate=0.2 stops one step short, at 0.2 x (n - 1) / n).
"""
from __future__ import annotations

import math

from dse.errors import UserError
from dse.channels import make_divisible
from dse.point import Head, Point, Stage, Stem

# B0's stages: (expansion, kernel, stride, width, depth)
B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
      (6, 3, 1, 320, 1))
STEM, HEAD = 32, 1280
# name: (width multiplier, depth multiplier, resolution, dropout) from the paper / timm's _gen_efficientnet
CONFIGS = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
}


def efficientnet(width_mult: float = 1.0, depth_mult: float = 1.0, image_size: int = 224, dropout: float = 0.2,
                 num_classes: int = 1000, drop_path: float = 0.2) -> Point:
    """B0 scaled by `width_mult` and `depth_mult`; a 3x3/2 stem from 128 px, a stride-1 stem below (32 -> 2 px)."""
    for name, value in (("width_mult", width_mult), ("depth_mult", depth_mult)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise UserError(f"{name}: must be > 0, got {value!r}")
    width = lambda c: make_divisible(c * width_mult)  # noqa: E731  (timm's round_channels)
    stages = tuple(Stage("mbconv", int(math.ceil(d * depth_mult)), width(c), s, kernels=(k,), expansion=float(e))
                   for e, k, s, c, d in B0)
    stem = Stem("conv", width(STEM), 3, 2 if image_size >= 128 else 1)
    return Point(stages, stem=stem, head=Head(conv=width(HEAD), dropout=dropout), skip="identity", attention="se",
                 attn_ratio=0.25, act="silu", drop_path=drop_path, image_size=image_size, in_chans=3,
                 num_classes=num_classes)


POINTS = {name: efficientnet(w, d, size, p) for name, (w, d, size, p) in CONFIGS.items()}
POINTS["efficientnet_b0_cifar"] = efficientnet(image_size=32, num_classes=10)
REFERENCES = {name: f"timm:{name}" for name in CONFIGS}
