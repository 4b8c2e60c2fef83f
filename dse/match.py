"""Complexity matching: for each value of a swept dimension, the free width that keeps a target complexity.

    python -m dse.match resnext50_32x4d --sweep cardinality=1,2,4,8,32 --free bottleneck_width --target flops
    python -m dse.match wrn_28_10 --sweep depth=16,22,28,40 --free k --target params --scope net

The solver, its scopes and ResNeXt's Table 2 example are in dse.matching; a study's `match:` key uses it too.
"""
from __future__ import annotations

import argparse
import sys

from dse.errors import UserError
from dse.matching import FREES, SWEEPS, Match, default_scope, load_point, solve


def _parse_sweep(text: str) -> tuple[str, list[int]]:
    name, _, values = text.partition("=")
    try:
        return name, [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--sweep: expected NAME=V1,V2,... with integers, got {text!r}") from None


def format_match(m: Match, metric: str) -> str:
    """One printed line per solved cell."""
    return (f"{m.sweep}={m.value:<4d} {m.free}={m.width:<4d} params={m.params / 1e6:8.3f}M "
            f"flops={m.flops / 1e9:8.3f}G  {metric} {m.achieved:.4g} vs target {m.target:.4g} "
            f"({m.rel_error:+.2%})")


def main(argv=None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m dse.match", description=__doc__.split("\n")[0])
    ap.add_argument("point", help="zoo name (e.g. resnext50_32x4d) or a point YAML/JSON file")
    ap.add_argument("--sweep", required=True, help=f"NAME=V1,V2,... ; NAME in {', '.join(SWEEPS)}")
    ap.add_argument("--free", required=True, help=f"free width: {', '.join(FREES)}")
    ap.add_argument("--target", default="flops", help="flops | params (the reference's) or flops=4.1G / params=36.5M")
    ap.add_argument("--scope", default=None, help="net | block (default: block for a cardinality sweep, as "
                    "ResNeXt Table 2 matched the conv2 template block; net for depth/blocks sweeps)")
    ap.add_argument("--eps", type=float, default=0.1, help="largest relative error accepted (default 0.1)")
    args = ap.parse_args(argv)
    try:
        point = load_point(args.point)
        sweep, values = _parse_sweep(args.sweep)
        scope = args.scope or default_scope(sweep)
        metric = str(args.target).partition("=")[0]
        matches = solve(point, sweep, values, args.free, args.target, args.eps, scope)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# {point.name or args.point}: {args.free} per {sweep} at {metric} of the {scope} "
          f"= {matches[0].target:.4g} (closest integer width)")
    for m in matches:
        print(format_match(m, metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
