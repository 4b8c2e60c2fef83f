"""Small shared layers: conv(-norm-act), named pools, the stem and the head."""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import get_act_layer

from dse.point import PREACT, Point

POOLS = {
    "none": lambda: nn.Identity(),
    "max2": lambda: nn.MaxPool2d(2, 2),
    "max3": lambda: nn.MaxPool2d(3, 2, 1),
    "max3_valid": lambda: nn.MaxPool2d(3, 2, 0),
    "avg2": lambda: nn.AvgPool2d(2, 2),
}


def act(point: Point) -> nn.Module:
    """The point's activation as a module (timm's factory)."""
    return get_act_layer(point.act)()


def norm(point: Point, c: int) -> nn.Module:
    """BatchNorm, or identity when the point has no norm."""
    return nn.BatchNorm2d(c) if point.norm == "bn" else nn.Identity()


def conv(point: Point, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int | None = None,
         groups: int = 1) -> nn.Conv2d:
    """A conv with a bias only when the point has no norm layers."""
    pad = kernel // 2 if padding is None else padding
    return nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=point.norm == "none")


def conv_norm_act(point: Point, cin: int, cout: int, kernel: int = 1, stride: int = 1,
                  padding: int | None = None, groups: int = 1, apply_act: bool = True) -> nn.Sequential:
    """conv -> norm -> act (act optional)."""
    layers = [conv(point, cin, cout, kernel, stride, padding, groups), norm(point, cout)]
    if apply_act:
        layers.append(act(point))
    return nn.Sequential(*layers)


def stem(point: Point, in_chans: int) -> tuple[nn.Module, int]:
    """The stem and its output width."""
    s = point.stem
    if s.type == "none":
        return POOLS[s.pool](), in_chans
    pad = s.kernel // 2 if s.padding < 0 else s.padding
    layers = [conv(point, in_chans, s.width, s.kernel, s.stride, pad)]
    if s.type == "conv":
        layers += [norm(point, s.width), act(point)]
    layers.append(POOLS[s.pool]())
    return nn.Sequential(*layers), s.width


class Head(nn.Module):
    """Final norm-act (pre-activation nets), pooling, hidden fc layers, dropout and classifier.

    `flat` is the number of features after pooling (for `flatten` it depends on the image size, which
    the caller knows from dse.count).
    """

    def __init__(self, point: Point, c: int, flat: int, num_classes: int):
        super().__init__()
        hd = point.head
        preact = point.stages[-1].block in PREACT
        self.final = nn.Sequential(norm(point, c), act(point)) if preact else nn.Identity()
        if hd.type == "conv":
            self.pool = nn.Sequential(nn.Dropout(hd.dropout), nn.Conv2d(c, num_classes, 1),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Identity()
            return
        self.pool = {
            "avg": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            "max": lambda: nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten()),
            "adaptive": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(hd.pool_size), nn.Flatten()),
            "flatten": lambda: nn.Flatten(),
        }[hd.pool]()
        layers = []
        for width in hd.hidden:
            layers += [nn.Dropout(hd.dropout), nn.Linear(flat, width), act(point)]
            flat = width
        self.fc = nn.Sequential(*layers, nn.Dropout(hd.dropout), nn.Linear(flat, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.final(x)))
