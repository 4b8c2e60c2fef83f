"""Complexity matching: for each value of a swept dimension, the free width that keeps a target complexity.

`solve(point, "cardinality", [1, 2, 4, 8, 32], "bottleneck_width", "flops")` answers ResNeXt's Table 2
question: which bottleneck width d keeps the complexity of the reference point at each cardinality?
Complexity grows monotonically with every free width here, so an integer bisection finds the two widths
that bracket the target and the closer one wins (ties go to the smaller width).

Scopes: `net` matches the whole network; `block` matches one template block, the second block of the
first stage (ResNeXt's "conv2 template": 256-d in and out, no projection). At fixed map size a block's
FLOPs are its conv params x H x W, so block-scope flops and params pick (nearly) the same width.

The default scope is `block` for a cardinality sweep and `net` for depth sweeps. ResNeXt's Table 2 is a
block-scope match: d = 64, 40, 24, 14, 4 for C = 1, 2, 4, 8, 32 are the widths closest to the template
block's complexity. Matching whole-network FLOPs of resnext50_32x4d instead gives 65 and 41 for C = 1
and 2, because later stages and the stem do not scale the same way.

A study's `match:` key turns into grid cells through `cells` (dse.study); `python -m dse.match` prints a
sweep (dse.match is the command, this module the solver).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from dse import yamlfile, zoo
from dse.cost import complexity
from dse.errors import UserError, choose
from dse.point import GROUPED, Point

MAX_WIDTH = 1 << 14  # search ceiling for a free width


# ----- swept dimensions: fn(point, value) -> point -----
def _with_cardinality(point: Point, value: int) -> Point:
    return point.replace(cardinality=int(value))


def _with_blocks(point: Point, value: int) -> Point:
    return point.replace(stages=tuple(replace(s, depth=int(value)) for s in point.stages))


# depth = stages x convs-per-block x N + extra. WRN counts the stem and the three 1x1 shortcut convs
# (6N + 4); He et al. (ResNet, pre-act ResNet, ResNeXt) count the stem and the fc layer (6N + 2, 9N + 2).
DEPTH_EXTRA = {"preact_basic": 4, "basic": 2, "bottleneck": 2, "preact_bottleneck": 2}


def _convs_per_block(stage) -> int:
    return 2 + len(stage.kernels) if stage.block in GROUPED else len(stage.kernels)


def _with_depth(point: Point, value: int) -> Point:
    first = point.stages[0]
    extra = choose("block for a depth sweep", first.block, DEPTH_EXTRA)
    per = len(point.stages) * _convs_per_block(first)
    n, rest = divmod(int(value) - extra, per)
    if rest or n < 1:
        raise UserError(f"sweep depth={value}: {first.block} nets have depth {per}N+{extra} (N >= 1)")
    return _with_blocks(point, n)


SWEEPS = {"cardinality": _with_cardinality, "depth": _with_depth, "blocks": _with_blocks}


# ----- free widths: fn(point, width) -> point -----
def _with_bottleneck_width(point: Point, value: int) -> Point:
    return point.replace(bottleneck_width=int(value))


def _with_growth_rate(point: Point, value: int) -> Point:
    return point.replace(growth_rate=int(value))


def _scaled(point: Point, factor: float) -> Point:
    stages = tuple(replace(s, width=max(1, round(s.width * factor))) if s.width else s for s in point.stages)
    return point.replace(stages=stages)


def _with_k(point: Point, value: int) -> Point:
    """WRN widening: stage widths are k x (stem width x 2^i); k of the reference is stage-0 width / stem width."""
    k0 = point.stages[0].width / point.stem.width
    return _scaled(point, int(value) / k0)


def _with_width(point: Point, value: int) -> Point:
    """Stage-0 width = value; later stages keep their width ratios to stage 0."""
    return _scaled(point, int(value) / point.stages[0].width)


FREES = {"bottleneck_width": _with_bottleneck_width, "k": _with_k, "growth_rate": _with_growth_rate,
         "width": _with_width}
METRICS = ("flops", "params")
SCOPES = ("net", "block")


@dataclass(frozen=True)
class Match:
    """One solved cell: the swept value, the free width found, and the complexity it gives."""

    sweep: str
    value: int
    free: str
    width: int
    params: int
    flops: int
    target: float
    achieved: float
    rel_error: float
    point: Point

    @property
    def label(self) -> str:
        """Short cell label, e.g. 'cardinality=8 bottleneck_width=14'."""
        return f"{self.sweep}={self.value} {self.free}={self.width}"


def parse_size(text) -> float:
    """'36.5M', '4.1G', '70k' or a plain number -> float."""
    if isinstance(text, (int, float)):
        return float(text)
    units = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}
    s = str(text).strip()
    try:
        return float(s[:-1]) * units[s[-1]] if s and s[-1] in units else float(s)
    except ValueError:
        raise UserError(f"target: {text!r} is not a number like 36.5M, 4.1G or 70000") from None


def block_complexity(point: Point, stage: int = 0):
    """(params, flops) of one non-first block of `stage` (in width = out width, no projection)."""
    one = [replace(s, depth=1 if i == stage else s.depth) for i, s in enumerate(point.stages)]
    two = [replace(s, depth=2 if i == stage else s.depth) for i, s in enumerate(point.stages)]
    a, b = complexity(point.replace(stages=tuple(one))), complexity(point.replace(stages=tuple(two)))
    return b.params - a.params, b.flops - a.flops


def measure(point: Point, metric: str, scope: str = "net") -> float:
    """The point's `metric` (flops or params) over `scope` (net or block)."""
    choose("target metric", metric, dict.fromkeys(METRICS))
    choose("scope", scope, dict.fromkeys(SCOPES))
    if scope == "block":
        params, flops = block_complexity(point)
    else:
        params, flops = complexity(point)
    return float(flops if metric == "flops" else params)


def parse_target(target, reference: Point, scope: str) -> tuple[str, float]:
    """'flops' / 'params' (the reference's own) or 'flops=4.1G' / 'params=36.5M' -> (metric, value)."""
    metric, _, number = str(target).partition("=")
    choose("target metric", metric, dict.fromkeys(METRICS))
    return metric, parse_size(number) if number else measure(reference, metric, scope)


def _closest(cost, target: float) -> int:
    """Integer width whose cost is closest to `target`; cost is non-decreasing in width."""
    lo, hi = 1, 1
    while cost(hi) < target:
        lo, hi = hi, hi * 2
        if hi > MAX_WIDTH:
            raise UserError(f"target {target:.4g} is out of reach: width {MAX_WIDTH} still falls short")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) < target else (lo, mid)
    if cost(lo) >= target:  # target at or below width 1
        return lo
    return lo if target - cost(lo) <= cost(hi) - target else hi


def default_scope(sweep: str) -> str:
    """block when the sweep keeps the block layout (cardinality), net when it changes depth."""
    return "block" if sweep == "cardinality" else "net"


def solve(point: Point, sweep: str, values, free: str, target="flops", eps: float = 0.1,
          scope: str | None = None) -> list[Match]:
    """For each swept value, the free width whose complexity is closest to the target (within eps)."""
    set_sweep = choose("sweep", sweep, SWEEPS)
    set_free = choose("free width", free, FREES)
    scope = scope or default_scope(sweep)
    metric, goal = parse_target(target, point, scope)
    out = []
    for value in values:
        base = set_sweep(point, value)

        def cost(width, base=base):
            return measure(set_free(base, width), metric, scope)

        width = _closest(cost, goal)
        solved = set_free(base, width)
        achieved = cost(width)
        err = (achieved - goal) / goal
        if abs(err) > eps:
            raise UserError(f"{sweep}={value}: closest {free}={width} gives {metric} {achieved:.4g}, "
                            f"{err:+.1%} off target {goal:.4g} (eps {eps:.0%}); infeasible")
        c = complexity(solved)
        name = f"{point.name}_{sweep}{value}_{free}{width}" if point.name else ""
        out.append(Match(sweep, int(value), free, width, c.params, c.flops, goal, achieved, err,
                         solved.replace(name=name)))
    return out


MATCH_KEYS = ("point", "sweep", "values", "free", "target", "eps", "scope", "label", "labels")


def cells(spec, space=None) -> dict:
    """A study's `match:` mapping (or list of them) -> {label: Point}, one cell per swept value.

    Keys: point (zoo name or point mapping), sweep, values, free, target (default flops), eps, scope,
    label (a format string over {value} and {width}, e.g. "ResNeXt-50 {value}x{width}d"), labels (a list
    of such strings, one per value, for rows the paper names differently).
    """
    spec = getattr(spec, "match", spec)  # a Study or its `match:` value
    specs = spec if isinstance(spec, list) else [spec]
    out = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise UserError(f"study.match[{i}]: must be a mapping with keys {', '.join(MATCH_KEYS)}")
        extra = sorted(set(spec) - set(MATCH_KEYS))
        missing = [k for k in ("point", "sweep", "values", "free") if k not in spec]
        if extra or missing:
            bad = f"unknown key {extra[0]!r}" if extra else f"missing key {missing[0]!r}"
            raise UserError(f"study.match[{i}]: {bad}; valid: {', '.join(MATCH_KEYS)}")
        ref = spec["point"]
        point = load_point(ref) if isinstance(ref, str) else Point.from_dict(ref)
        label = spec.get("label", "{value}x{width}" if spec["sweep"] == "cardinality" else "{value}-{width}")
        labels = spec.get("labels") or [label] * len(spec["values"])
        if len(labels) != len(spec["values"]):
            raise UserError(f"study.match[{i}].labels: needs one label per value ({len(spec['values'])})")
        for fmt, m in zip(labels, solve(point, spec["sweep"], spec["values"], spec["free"],
                                         spec.get("target", "flops"), spec.get("eps", 0.1), spec.get("scope"))):
            out[fmt.format(value=m.value, width=m.width)] = m.point
    return out


def load_point(name_or_path: str) -> Point:
    """A zoo name or a YAML/JSON file holding a point mapping."""
    if name_or_path.endswith((".yaml", ".yml", ".json")):
        data = yamlfile.read(name_or_path, "point file")
        try:
            return Point.from_dict(data)
        except UserError as exc:
            raise UserError(f"{name_or_path}: {exc}") from None

    return zoo.get(name_or_path)
