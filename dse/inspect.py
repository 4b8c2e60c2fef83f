"""`python -m dse.inspect POINT [--rank N | --cheapest | --most-accurate] [--image-size N] [--classes N] [--json]`.

Prints a point's parameters, FLOPs (multiply-adds of conv and linear layers) and a per-stage summary,
counted analytically: no torch, answers in a fraction of a second. POINT is a dse.zoo name; a YAML or
JSON file holds a point mapping, or the object `--json` prints (its `point` key is used), so the JSON
output can be saved, edited and inspected again. A study's `runs/<name>/best.yaml` (dse.results.files
describes its layout) holds the Pareto front, cheapest first: by default the most accurate front point is
shown; `--cheapest` or `--rank N` (the N of best/<rank>_<id>.yaml) picks another. Which one is shown, and
how to pick another, goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dse import yamlfile
from dse.errors import UserError


def read_point(source: str, rank: int | str | None = None):
    """A zoo name, a point file, or a study's best.yaml (its front point number `rank`, or 'cheapest' or
    'accurate'; default 'accurate') -> Point."""
    from dse.point import Point

    path = Path(source)
    if not (source.endswith((".yaml", ".yml", ".json")) or path.is_file()):
        if rank is not None:
            raise UserError(f"--rank: only a best.yaml file has ranks; {source!r} is a dse.zoo name")
        from dse import zoo

        return zoo.get(source)
    data = _pick(_load(path, source), source, rank)
    try:
        return Point.from_dict(data)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def _load(path: Path, source: str):
    """The data in a YAML/JSON file (read by dse.yamlfile, bounded), or a one-line UserError saying why not."""
    if not path.exists():
        raise UserError(f"point file {source!r} does not exist")
    return yamlfile.read(path, "point file")


def _pick(data, source: str, rank: int | None):
    """The point mapping in a file's data: a best.yaml's front[rank], the `point` key of --json, or the data."""
    if isinstance(data, dict) and isinstance(data.get("front"), list):  # best.yaml, written by dse.report
        return _front_point(data["front"], source, "accurate" if rank is None else rank)
    if rank is not None:
        raise UserError(f"--rank: only a best.yaml file has ranks; {source} has no 'front' list")
    if isinstance(data, dict) and isinstance(data.get("point"), dict):  # the object --json prints
        return data["point"]
    return data


def _front_point(front: list, source: str, rank: int | str) -> dict:
    """Front entry `rank` of a best.yaml (ranks as dse.report numbers them: best/<rank>_<id>.yaml; 'cheapest'
    is rank 0, 'accurate' the highest accuracy); says on stderr which one it is and how to pick another."""
    if not front:
        raise UserError(f"{source}: the front is empty (no trained trial yet); nothing to inspect")
    accs = [e.get("accuracy") if isinstance(e, dict) and isinstance(e.get("accuracy"), (int, float)) else -1
            for e in front]
    best = accs.index(max(accs))
    rank = {"cheapest": 0, "accurate": best}.get(rank, rank)
    if not 0 <= rank < len(front):
        raise UserError(f"--rank: {rank} is out of range; {source} has {len(front)} point(s) on its front, "
                        f"valid ranks 0..{len(front) - 1}")
    entry = front[rank]
    if not (isinstance(entry, dict) and isinstance(entry.get("point"), dict)):
        raise UserError(f"{source}: front[{rank}] has no 'point' mapping")
    which = ("the only one" if len(front) == 1 else "the most accurate" if rank == best
             else "the cheapest" if rank == 0 else "")
    print(shown(entry, rank, len(front), which, source), file=sys.stderr)
    return entry["point"]


def shown(entry: dict, rank: int, size: int, which: str, source: str) -> str:
    """Which front point is shown and how to pick another, in one line."""
    numbers = [which] if which else []
    if isinstance(entry.get("accuracy"), (int, float)):
        numbers.append(f"{100 * entry['accuracy']:.2f}%")
    if isinstance(entry.get("flops"), (int, float)):
        numbers.append(f"{entry['flops'] / 1e6:.3g} MFLOPs")
    numbers.append(f"trial {entry.get('trial')}")
    return (f"{source}: front point --rank {rank} of {size} ({', '.join(numbers)}); --most-accurate (the default), "
            f"--cheapest or --rank N (0..{size - 1}, cheapest first) picks another")


def stage_rows(point) -> list[dict]:
    """One row per part (stem, each stage, head): block, depth, width, output shape, params, MACs, activations."""
    from dse.families import net
    from dse.graph.count import parts

    stem, *stages, head = parts(net(point))
    rows = [dict(part="stem", block=point.stem.type, depth=1 if point.stem.type != "none" else 0,
                 width=stem.c, out=[stem.c, stem.h, stem.w], params=stem.params, flops=stem.macs, acts=stem.acts)]
    for i, (stage, count) in enumerate(zip(point.stages, stages)):
        rows.append(dict(part=str(i), block=stage.block, depth=stage.depth, width=count.c,
                         out=[count.c, count.h, count.w], params=count.params, flops=count.macs, acts=count.acts))
    rows.append(dict(part="head", block=point.head.type, depth=len(point.head.hidden) + 1, width=head.c,
                     out=[head.c], params=head.params, flops=head.macs, acts=head.acts))
    return rows


def summary(point) -> dict:
    """The JSON object: name, params, flops, activations, receptive field, geometry, per-stage rows, the point."""
    from dse.cost import measures

    m = measures(point)
    return dict(name=point.name, id=point.id, params=m.params, flops=m.flops, acts=m.acts, rf=m.rf,
                rf_stride=m.rf_stride, image_size=point.image_size, num_classes=point.num_classes,
                in_chans=point.in_chans, stages=stage_rows(point), point=point.to_dict())


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
             "multiply-adds)",
             f"activations {info['acts']:,} ({_si(info['acts'])})   receptive field {info['rf']} px at stride "
             f"{info['rf_stride']}", "",
             f"{'part':<6}{'block':<19}{'depth':>6}{'width':>7}  {'output':<14}{'params':>13}{'MACs':>14}{'acts':>14}"]
    for r in info["stages"]:
        out = "x".join(map(str, r["out"]))
        lines.append(f"{r['part']:<6}{r['block']:<19}{r['depth']:>6}{r['width']:>7}  {out:<14}{r['params']:>13,}"
                     f"{_si(r['flops']):>14}{_si(r['acts']):>14}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one `error:` line (no usage block), exit 2."""

    def error(self, message):
        """Print one line and exit 2."""
        message = message.removeprefix("argument ")
        self.exit(2, f"error: {message} (see python -m dse.inspect --help)\n")


def _integer(text: str) -> int:
    """An argparse type: an int, or a one-line complaint naming the value."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = _Parser(prog="python -m dse.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("point", help="a dse.zoo name, a point .yaml/.json file, or runs/<name>/best.yaml")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--rank", type=_integer, help="with a best.yaml: front point N, cheapest first (the N of "
                                                    "best/<N>_<id>.yaml)")
    pick.add_argument("--cheapest", dest="rank", action="store_const", const="cheapest",
                      help="with a best.yaml: the cheapest front point (rank 0)")
    pick.add_argument("--most-accurate", dest="rank", action="store_const", const="accurate",
                      help="with a best.yaml: the most accurate front point (the default)")
    parser.add_argument("--image-size", type=_integer)
    parser.add_argument("--classes", type=_integer)
    parser.add_argument("--in-chans", type=_integer)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit status (2 on a user error; 0, quietly, when the reader of stdout goes away)."""
    args = _parser().parse_args(argv)
    try:
        point = read_point(args.point, args.rank)
        changes = {k: v for k, v in (("image_size", args.image_size), ("num_classes", args.classes),
                                     ("in_chans", args.in_chans)) if v is not None}
        if changes:
            point = point.replace(**changes)
        info = summary(point)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(info) if args.json else text(info), flush=True)
    except BrokenPipeError:  # `| head`: stop quietly; point stdout at devnull so the exit flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
