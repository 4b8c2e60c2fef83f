"""Counts of the attention modules dse takes from timm (se, eca, cbam, sk, splat, EfficientNet's se_mb).

se/eca/cbam sit on a block's output; sk and splat replace a block's k x k conv together with the norm and
act after it. The channel rounding follows timm's own `make_divisible` calls
(SEModule, CbamModule, SelectiveKernel, SplitAttn), so the counts equal the built modules. These timm
modules carry their own BatchNorm whatever the point's `norm` is.
"""
from __future__ import annotations

import math

from dse.channels import SK_PATHS, SPLAT_RADIX, make_divisible, splat_channels
from dse.errors import UserError

KINDS = ("se", "eca", "cbam", "sk", "splat")
SPATIAL = ("sk", "splat")  # replace a conv; the others follow the branch
SK_DIVISOR = 16  # timm's skresnet18/34 setting (rd_divisor=16, split_input=True)


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


def _se(node, s):
    c, rd = s.c, se_channels(s.c, node.ratio)
    return s.cost(2 * c * rd + rd + c, 2 * c * rd, rd + c)


def _se_mb(node, s):
    c, rd = s.c, node.rd
    return s.cost(2 * c * rd + rd + c, 2 * c * rd, rd + c)


def _eca(node, s):
    k = eca_kernel(s.c)
    return s.cost(k, k * s.c, s.c)


def _cbam(node, s):
    c, rd = s.c, cbam_channels(s.c, node.ratio)
    spatial = 2 * 7 * 7
    field = s.window(7, 1, 3)  # the spatial gate's 7 x 7 conv sees a neighbourhood: it widens the field
    return s.cost(2 * c * rd + spatial + 2, 2 * (2 * c * rd) + spatial * s.h * s.w, 2 * (rd + c) + s.h * s.w,
                  r=field["r"], start=field["start"])


def _sk(node, s):
    if node.cin % SK_PATHS or (node.cin // SK_PATHS) % min(node.cout, node.groups):
        raise UserError(f"attention: 'sk' splits {node.cin} input channels over {SK_PATHS} paths; "
                        f"cardinality {node.groups} must divide {node.cin // SK_PATHS}")
    groups = min(node.cout, node.groups)
    paths = [s.window(3, node.stride, (node.stride - 1 + 2 * d) // 2, d) for d in sk_dilations(node.kernel)]
    if len({(p["h"], p["w"]) for p in paths}) != 1:
        raise UserError(f"attention: 'sk' paths disagree on the output size at stride {node.stride}; "
                        "use stride 1 or 2")
    ho, wo = paths[0]["h"], paths[0]["w"]
    weights = node.cout * (node.cin // SK_PATHS // groups) * 9
    rd = sk_channels(node.cout, node.ratio)
    fc = node.cout * rd + rd * SK_PATHS * node.cout
    params = SK_PATHS * (weights + 2 * node.cout) + fc + 2 * rd
    start = min(p["start"] for p in paths)
    end = max(p["start"] + p["r"] - 1 for p in paths)
    return s.cost(params, SK_PATHS * weights * ho * wo + fc, SK_PATHS * node.cout * ho * wo + rd + SK_PATHS * node.cout,
                  c=node.cout, h=ho, w=wo, r=int(round(end - start)) + 1, j=paths[0]["j"], start=start)


def _splat(node, s):
    g, r = node.groups, SPLAT_RADIX
    rd = splat_channels(node.cin, node.ratio)
    if node.cin % (g * r) or node.cout % g or rd % g:
        raise UserError(f"attention: 'splat' needs cardinality {g} to divide {node.cin // r} input, {node.cout} "
                        f"output and {rd} attention channels")
    field = s.window(node.kernel, node.stride, node.kernel // 2)
    out = field["h"] * field["w"]
    weights = node.cout * r * (node.cin // (g * r)) * node.kernel ** 2
    fc = rd * (node.cout // g) + node.cout * r * (rd // g)
    params = weights + 2 * node.cout * r + fc + rd + 2 * rd + node.cout * r
    return s.cost(params, weights * out + fc, node.cout * r * out + rd + node.cout * r, c=node.cout, **field)


COUNTS = {"se": _se, "se_mb": _se_mb, "eca": _eca, "cbam": _cbam, "sk": _sk, "splat": _splat}


def count(node, s):
    """The state after attention node `node` (a dse.graph.nodes.Attention) on state `s`."""
    return COUNTS[node.kind](node, s)
