"""Named plain points: LeNet-5, AlexNet, VGG-16/19 (torchvision layouts) and NIN for CIFAR."""
from __future__ import annotations

from dse.point import Head, Point, Stage, Stem

IMAGENET = dict(image_size=224, in_chans=3, num_classes=1000)
VGG_DEPTHS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


def vgg(depth: int) -> Point:
    """torchvision VGG without BN: 3x3 convs with bias, max-pool per stage, 7x7 adaptive pool, 4096-4096 head."""
    stages = tuple(Stage("plain", d, w, pool="max2") for d, w in zip(VGG_DEPTHS[depth], (64, 128, 256, 512, 512)))
    return Point(stages, stem=Stem("none"), head=Head("adaptive", 7, (4096, 4096), 0.5), skip="none", norm="none",
                 **IMAGENET)


POINTS: dict[str, Point] = {
    # LeNet-5: tanh, average pools, valid 5x5 convs, fc 120-84-10 (61,706 params)
    "lenet5": Point((Stage("plain", 1, 6, kernels=(5,), pool="avg2", padding="valid"),
                     Stage("plain", 1, 16, kernels=(5,), pool="avg2", padding="valid")),
                    stem=Stem("none"), head=Head("flatten", hidden=(120, 84)), skip="none", act="tanh", norm="none",
                    image_size=32, in_chans=1, num_classes=10),
    # torchvision AlexNet: 11x11/4 stem, 3x3/2 pools without padding, 6x6 adaptive pool
    "alexnet": Point((Stage("plain", 1, 192, kernels=(5,), pool="max3_valid"),
                      Stage("plain", 1, 384),
                      Stage("plain", 2, 256, pool="max3_valid")),
                     stem=Stem("conv", 64, 11, 4, 2, "max3_valid"), head=Head("adaptive", 6, (4096, 4096), 0.5),
                     skip="none", norm="none", **IMAGENET),
    "vgg16": vgg(16),
    "vgg19": vgg(19),
    # NIN (CIFAR): three mlpconv stages of width 192, dropout after the pools, 1x1 conv head + global average
    "nin_cifar": Point((Stage("plain", 1, 192, kernels=(5, 1, 1), pool="max3"),
                        Stage("plain", 1, 192, kernels=(5, 1, 1), pool="max3"),
                        Stage("plain", 1, 192, kernels=(3, 1, 1))),
                       stem=Stem("none"), head=Head(type="conv"), skip="none", norm="none", dropout=0.5,
                       image_size=32, in_chans=3, num_classes=10),
}

REFERENCES = {"vgg16": "torchvision:vgg16", "vgg19": "torchvision:vgg19", "alexnet": "torchvision:alexnet"}
