"""Analytic counts of the attention modules dse takes from timm (se, eca, cbam, sk, splat).

se/eca/cbam sit on a block's output (channels `op.cout`); sk and splat replace a block's k x k conv
together with the norm and act after it. The channel rounding follows timm's own `make_divisible` calls
(SEModule, CbamModule, SelectiveKernel, SplitAttn), so the counts equal the built modules. These timm
modules carry their own BatchNorm whatever the point's `norm` is.
"""
from __future__ import annotations

import math

from dse.count.layers import Count, out_size
from dse.errors import UserError

KINDS = ("se", "eca", "cbam", "sk", "splat")
SPATIAL = ("sk", "splat")  # replace a conv; the others follow the branch
SK_PATHS = 2  # SelectiveKernel: a 3x3 path and a dilated 3x3 path, input channels split between them
SK_DIVISOR = 16  # timm's skresnet18/34 setting (rd_divisor=16, split_input=True)
SPLAT_RADIX = 2  # ResNeSt's radix


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm's channel rounding: nearest multiple of `divisor`, at least `min_value`, not below round_limit * v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


def se_channels(c: int, ratio: float) -> int:
    """SEModule's reduced width."""
    return make_divisible(c * ratio, 8, round_limit=0.0)


def eca_kernel(c: int) -> int:
    """EcaModule's adaptive 1-D kernel size (gamma 2, beta 1)."""
    t = int(abs(math.log(c, 2) + 1) / 2)
    return max(t if t % 2 else t + 1, 3)


def cbam_channels(c: int, ratio: float) -> int:
    """CbamModule's reduced width (divisor 1)."""
    return make_divisible(c * ratio, 1, round_limit=0.0)


def sk_dilations(kernel: int) -> tuple[int, int]:
    """SelectiveKernel paths for a k x k conv: 3x3 kernels with the dilations of k and k + 2 (keep_3x3)."""
    return (kernel - 1) // 2, (kernel + 1) // 2


def sk_channels(cout: int, ratio: float) -> int:
    """SelectiveKernelAttn width."""
    return make_divisible(cout * ratio, SK_DIVISOR)


def splat_channels(cin: int, ratio: float) -> int:
    """SplitAttn attention width."""
    return make_divisible(cin * SPLAT_RADIX * ratio, 8, min_value=32)


def _se(op, ratio, h, w) -> Count:
    c, rd = op.cout, se_channels(op.cout, ratio)
    return Count(2 * c * rd + rd + c, 2 * c * rd, c, h, w)


def _eca(op, ratio, h, w) -> Count:
    k = eca_kernel(op.cout)
    return Count(k, k * op.cout, op.cout, h, w)


def _cbam(op, ratio, h, w) -> Count:
    c, rd = op.cout, cbam_channels(op.cout, ratio)
    spatial = 2 * 7 * 7
    return Count(2 * c * rd + spatial + 2, 2 * (2 * c * rd) + spatial * h * w, c, h, w)


def _sk(op, ratio, h, w) -> Count:
    if op.cin % SK_PATHS or (op.cin // SK_PATHS) % min(op.cout, op.groups):
        raise UserError(f"attention: 'sk' splits {op.cin} input channels over {SK_PATHS} paths; "
                        f"cardinality {op.groups} must divide {op.cin // SK_PATHS}")
    groups = min(op.cout, op.groups)
    ho, wo = _sk_size(op, h), _sk_size(op, w)
    weights = op.cout * (op.cin // SK_PATHS // groups) * 9
    rd = sk_channels(op.cout, ratio)
    fc = op.cout * rd + rd * SK_PATHS * op.cout
    params = SK_PATHS * (weights + 2 * op.cout) + fc + 2 * rd
    return Count(params, SK_PATHS * weights * ho * wo + fc, op.cout, ho, wo)


def _sk_size(op, size: int) -> int:
    """Output size of the SK paths (all paths agree for strides 1 and 2)."""
    outs = set()
    for d in sk_dilations(op.kernel):
        pad = (op.stride - 1 + 2 * d) // 2
        outs.add((size + 2 * pad - 2 * d - 1) // op.stride + 1)
    if len(outs) != 1:
        raise UserError(f"attention: 'sk' paths disagree on the output size at stride {op.stride}; use stride 1 or 2")
    return outs.pop()


def _splat(op, ratio, h, w) -> Count:
    g, r = op.groups, SPLAT_RADIX
    rd = splat_channels(op.cin, ratio)
    if op.cin % (g * r) or op.cout % g or rd % g:
        raise UserError(f"attention: 'splat' needs cardinality {g} to divide {op.cin // r} input, {op.cout} output "
                        f"and {rd} attention channels")
    ho, wo = out_size(h, op.kernel, op.stride, op.kernel // 2), out_size(w, op.kernel, op.stride, op.kernel // 2)
    weights = op.cout * r * (op.cin // (g * r)) * op.kernel ** 2
    fc = rd * (op.cout // g) + op.cout * r * (rd // g)
    params = weights + 2 * op.cout * r + fc + rd + 2 * rd + op.cout * r
    return Count(params, weights * ho * wo + fc, op.cout, ho, wo)


COUNTS = {"se": _se, "eca": _eca, "cbam": _cbam, "sk": _sk, "splat": _splat}


def count(point, op, h: int, w: int) -> Count:
    """Params and MACs of the attention op `op` (a dse.count.plain.Op) on an h x w map."""
    return COUNTS[op.kind](op, point.attn_ratio, h, w)
