"""Channel arithmetic shared by the Point's checks and the graph's attention counts (plain functions).

The rounding is timm's `make_divisible` as its attention modules call it, so widths equal the built modules.
"""
from __future__ import annotations

SK_PATHS = 2  # SelectiveKernel: a 3x3 path and a dilated 3x3 path, input channels split between them
SPLAT_RADIX = 2  # ResNeSt's radix


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm's channel rounding: nearest multiple of `divisor`, at least `min_value`, not below round_limit * v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


def splat_channels(cin: int, ratio: float) -> int:
    """SplitAttn attention width."""
    return make_divisible(cin * SPLAT_RADIX * ratio, 8, min_value=32)
