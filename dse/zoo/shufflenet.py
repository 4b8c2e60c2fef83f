"""Named ShuffleNet V2 points (Ma et al., ECCV 2018, Table 5): torchvision's shufflenet_v2_x0_5 ... x2_0.

A 3x3/2 conv to 24 channels with a 3x3/2 max-pool, three stages of (4, 8, 4) units that each start by halving
the map, a 1x1 conv to 1024 channels (2048 at x2.0), global average pool, linear.
"""
from __future__ import annotations

from dse.point import Head, Point, Stage, Stem

REPEATS = (4, 8, 4)
# name: (stage widths, final 1x1 conv width) from the paper's Table 5 / torchvision's builders
CONFIGS = {
    "shufflenet_v2_x0_5": ((48, 96, 192), 1024),
    "shufflenet_v2_x1_0": ((116, 232, 464), 1024),
    "shufflenet_v2_x1_5": ((176, 352, 704), 1024),
    "shufflenet_v2_x2_0": ((244, 488, 976), 2048),
}


def shufflenet_v2(widths, head: int = 1024, repeats=REPEATS, kernel: int = 3, image_size: int = 224,
                  num_classes: int = 1000) -> Point:
    """A ShuffleNet V2: stages of `repeats` units at `widths`, each starting at stride 2; ImageNet stem at 224 px,
    a stride-1 stem without max-pool below 128 px (32 -> 16 -> 8 -> 4 over the stages)."""
    stem = Stem("conv", 24, 3, 2, pool="max3") if image_size >= 128 else Stem("conv", 24, 3, 1)
    stages = tuple(Stage("shuffle", d, w, 2, kernels=(kernel,)) for d, w in zip(repeats, widths))
    return Point(stages, stem=stem, head=Head(conv=head), skip="none", image_size=image_size, in_chans=3,
                 num_classes=num_classes)


POINTS = {name: shufflenet_v2(w, c) for name, (w, c) in CONFIGS.items()}
POINTS["shufflenet_v2_cifar"] = shufflenet_v2(*CONFIGS["shufflenet_v2_x1_0"], image_size=32, num_classes=10)
REFERENCES = {name: f"torchvision:{name}" for name in CONFIGS}
