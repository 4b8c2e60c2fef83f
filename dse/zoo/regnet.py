"""Named RegNet points: RegNetX and RegNetY at 200MF ... 32GF (Radosavovic et al., CVPR 2020, Tables; timm's
regnetx_002 ... regnety_320), from the quantized-linear rule's parameters (w0, wa, wm, depth, group width).
"""
from __future__ import annotations

from dse.families.regnet import stage_widths
from dse.point import Point, Stage, Stem

# name suffix: (w0, wa, wm, depth, group width) for X, then Y
X = {"002": (24, 36.44, 2.49, 13, 8), "004": (24, 24.48, 2.54, 22, 16), "006": (48, 36.97, 2.24, 16, 24),
     "008": (56, 35.73, 2.28, 16, 16), "016": (80, 34.01, 2.25, 18, 24), "032": (88, 26.31, 2.25, 25, 48),
     "040": (96, 38.65, 2.43, 23, 40), "064": (184, 60.83, 2.07, 17, 56), "080": (80, 49.56, 2.88, 23, 120),
     "120": (168, 73.36, 2.37, 19, 112), "160": (216, 55.59, 2.1, 22, 128), "320": (320, 69.86, 2.0, 23, 168)}
Y = {"002": (24, 36.44, 2.49, 13, 8), "004": (48, 27.89, 2.09, 16, 8), "006": (48, 32.54, 2.32, 15, 16),
     "008": (56, 38.84, 2.4, 14, 16), "016": (48, 20.71, 2.65, 27, 24), "032": (80, 42.63, 2.66, 21, 24),
     "040": (96, 31.41, 2.24, 22, 64), "064": (112, 33.22, 2.27, 25, 72), "080": (192, 76.82, 2.19, 17, 56),
     "120": (168, 73.36, 2.37, 19, 112), "160": (200, 106.23, 2.48, 18, 112), "320": (232, 115.89, 2.53, 20, 232)}


def regnet(w0: float, wa: float, wm: float, depth: int, group_width: int, se: bool = False, b: float = 1.0,
           image_size: int = 224, num_classes: int = 1000, stem_stride: int = 2) -> Point:
    """A RegNet: 3x3 stem of 32, the rule's stages (stride 2 each), average pool, linear."""
    widths, depths = stage_widths(w0, wa, wm, depth, group_width, b)
    stages = tuple(Stage("regnet", d, w, 2) for w, d in zip(widths, depths))
    return Point(stages, stem=Stem("conv", 32, 3, stem_stride), skip="projection", group_width=group_width,
                 bottleneck_ratio=b, attention="se" if se else "none", image_size=image_size, in_chans=3,
                 num_classes=num_classes)


POINTS = {**{f"regnetx_{k}": regnet(*v) for k, v in X.items()},
          **{f"regnety_{k}": regnet(*v, se=True) for k, v in Y.items()}}
POINTS["regnety_cifar"] = regnet(*Y["002"], se=True, image_size=32, num_classes=10, stem_stride=1)
REFERENCES = {name: f"timm:{name}" for name in POINTS if not name.endswith("cifar")}
