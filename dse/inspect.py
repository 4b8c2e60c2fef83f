"""`python -m dse.inspect NAME|point.yaml [--image-size N] [--classes N] [--in-chans N] [--json]`.

Prints a point's parameters, FLOPs (multiply-adds of conv and linear layers) and a per-stage summary,
counted analytically: no torch, answers in a fraction of a second. NAME is a dse.zoo point; a YAML or
JSON file holds a point mapping, or the object `--json` prints (its `point` key is used), so the JSON
output can be saved, edited and inspected again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dse.errors import UserError


def read_point(source: str):
    """A zoo name or a point file -> Point."""
    from dse.space.point import Point

    path = Path(source)
    if source.endswith((".yaml", ".yml", ".json")) or path.is_file():
        if not path.is_file():
            raise UserError(f"point file {source!r} does not exist")
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise UserError(f"{source}{line}: malformed YAML: {getattr(exc, 'problem', None) or exc}") from None
        if isinstance(data, dict) and isinstance(data.get("point"), dict):  # the object --json prints
            data = data["point"]
        try:
            return Point.from_dict(data)
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None
    from dse import zoo

    return zoo.get(source)


def stage_rows(point) -> list[dict]:
    """One row per part (stem, each stage, head): block, depth, width, output shape, params, MACs."""
    from dse.count import head, stem
    from dse.count.blocks import BLOCKS
    from dse.errors import choose

    size = point.image_size
    total = stem(point, point.in_chans, size, size)
    rows = [dict(part="stem", block=point.stem.type, depth=1 if point.stem.type != "none" else 0,
                 width=total.c, out=[total.c, total.h, total.w], params=total.params, flops=total.macs)]
    first = 0
    for i, stage in enumerate(point.stages):
        count = choose("block", stage.block, BLOCKS)(point, i, total.c, total.h, total.w, first)
        rows.append(dict(part=str(i), block=stage.block, depth=stage.depth, width=count.c,
                         out=[count.c, count.h, count.w], params=count.params, flops=count.macs))
        total = total.then(count)
        first += stage.depth
    out = head(point, total.c, total.h, total.w, point.num_classes)
    rows.append(dict(part="head", block=point.head.type, depth=len(point.head.hidden) + 1, width=out.c,
                     out=[out.c], params=out.params, flops=out.macs))
    return rows


def summary(point) -> dict:
    """The JSON object: name, params, flops, geometry, per-stage rows and the point itself."""
    from dse.count import complexity

    params, flops = complexity(point)
    return dict(name=point.name, id=point.id, params=params, flops=flops, image_size=point.image_size,
                num_classes=point.num_classes, in_chans=point.in_chans, stages=stage_rows(point),
                point=point.to_dict())


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3f} {unit}"
    return str(int(x))


def text(info: dict) -> str:
    """The human-readable report."""
    lines = [f"{info['name'] or '(unnamed point)'}  [{info['id']}]  {info['image_size']} px, {info['in_chans']} "
             f"channel(s), {info['num_classes']} classes",
             f"params {info['params']:,} ({_si(info['params'])})   FLOPs {info['flops']:,} ({_si(info['flops'])} "
             "multiply-adds)", "",
             f"{'part':<6}{'block':<19}{'depth':>6}{'width':>7}  {'output':<14}{'params':>13}{'MACs':>14}"]
    for r in info["stages"]:
        out = "x".join(map(str, r["out"]))
        lines.append(f"{r['part']:<6}{r['block']:<19}{r['depth']:>6}{r['width']:>7}  {out:<14}{r['params']:>13,}"
                     f"{_si(r['flops']):>14}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit status (2 on a user error)."""
    parser = argparse.ArgumentParser(prog="python -m dse.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("point", help="a dse.zoo name or a point .yaml/.json file")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--classes", type=int)
    parser.add_argument("--in-chans", type=int)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        point = read_point(args.point)
        changes = {k: v for k, v in (("image_size", args.image_size), ("num_classes", args.classes),
                                     ("in_chans", args.in_chans)) if v is not None}
        if changes:
            point = point.replace(**changes)
        info = summary(point)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info) if args.json else text(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
