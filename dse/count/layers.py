"""Analytic counts of single layers: params and multiply-adds (MACs), with the output size.

Conventions match `torch.utils.flop_counter.FlopCounterMode` / 2: conv and linear multiply-adds only
(no bias adds, norms, activations or pooling).
"""
from __future__ import annotations

from typing import NamedTuple


class Count(NamedTuple):
    """Params, multiply-adds, and the output shape (channels, height, width)."""

    params: int
    macs: int
    c: int
    h: int
    w: int

    def then(self, other: "Count") -> "Count":
        """Sequential composition: add costs, take the later shape."""
        return Count(self.params + other.params, self.macs + other.macs, other.c, other.h, other.w)


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Spatial size after a conv or pool (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def conv(cin: int, cout: int, h: int, w: int, kernel: int = 1, stride: int = 1, padding: int | None = None,
         groups: int = 1, bias: bool = False) -> Count:
    """A k x k conv; padding defaults to kernel // 2."""
    p = kernel // 2 if padding is None else padding
    ho, wo = out_size(h, kernel, stride, p), out_size(w, kernel, stride, p)
    weights = cout * (cin // groups) * kernel * kernel
    return Count(weights + (cout if bias else 0), weights * ho * wo, cout, ho, wo)


def norm(c: int, h: int, w: int, enabled: bool = True) -> Count:
    """BatchNorm affine params (2 per channel); no MACs."""
    return Count(2 * c if enabled else 0, 0, c, h, w)


def linear(cin: int, cout: int, bias: bool = True) -> Count:
    """A fully connected layer on a flat vector."""
    return Count(cin * cout + (cout if bias else 0), cin * cout, cout, 1, 1)


POOL_GEOMETRY = {"none": None, "max2": (2, 2, 0), "max3": (3, 2, 1), "max3_valid": (3, 2, 0), "avg2": (2, 2, 0)}


def pool(name: str, c: int, h: int, w: int) -> Count:
    """A named pooling layer (dse.point.POOLS): no params, no MACs, new size."""
    geo = POOL_GEOMETRY[name]
    if geo is None:
        return Count(0, 0, c, h, w)
    k, s, p = geo
    return Count(0, 0, c, out_size(h, k, s, p), out_size(w, k, s, p))
