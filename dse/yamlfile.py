"""Every YAML file dse reads (spaces, studies, points, best.yaml, a run's config.yaml, calibration files, dse/data)
is read here, as untrusted input: bounded before it is built, refused in one line naming the file.

A file is refused when it is over MAX_BYTES, is not UTF-8 (the byte offset is named), nests deeper than
MAX_DEPTH, or holds more than MAX_NODES nodes once its aliases are expanded (so the "billion laughs" shape,
an alias of an alias of ..., is refused before anything walks it). The limits are far above any real file: the
largest shipped one (dse/data/papers.yaml) is 7 kB, 456 nodes and 8 levels deep. The events are counted on
the stream, without recursion, before PyYAML builds a single object; only then is the file built with
PyYAML's SafeLoader (CSafeLoader when libyaml is there).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from dse.errors import UserError

MAX_BYTES = 2_000_000  # 2 MB: ~300x the largest shipped file
MAX_DEPTH = 64  # nesting levels (the deepest shipped file has 8)
MAX_NODES = 200_000  # scalars, lists and mappings, with every alias counted as the nodes it stands for

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read(path, what: str = "YAML file"):
    """The data of the YAML file at `path` (None when it is empty), or a one-line UserError naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} is not a file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise UserError(f"{path}: too big for a {what} (over {MAX_BYTES:,} bytes; limit {MAX_BYTES:,})")
    return loads(raw, str(path), what)


def loads(raw: bytes | str, where: str, what: str = "YAML file"):
    """The data of YAML text (bytes are decoded as UTF-8), checked against the limits; `where` names it."""
    if isinstance(raw, bytes):
        raw = _decode(raw, where, what)
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise UserError(f"{where}: too big for a {what} (over {MAX_BYTES:,} bytes; limit {MAX_BYTES:,})")
    try:
        _check_events(raw, where)
        return yaml.load(raw, Loader=_LOADER)  # noqa: S506 (a SafeLoader)
    except UserError:
        raise
    except yaml.YAMLError as exc:
        raise UserError(f"{where}{_line(exc)}: malformed YAML: {_problem(exc)}") from None
    except (ValueError, OverflowError, RecursionError, MemoryError) as exc:  # e.g. an int of 5,000 digits
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"{where}: cannot read a value: {text}") from None


def _decode(raw: bytes, where: str, what: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped), or a UserError naming the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, offset) + 1
        raise UserError(f"{where}:{line}: not UTF-8 text (byte {offset} is 0x{raw[offset]:02x}); "
                        f"a {what} must be UTF-8") from None


def _check_events(text: str, where: str) -> None:
    """Walk the parse events once: refuse nesting over MAX_DEPTH and over MAX_NODES expanded nodes."""
    sizes: dict[str, int] = {}  # anchor -> expanded nodes under it
    open_: list[tuple[str | None, int]] = []  # (anchor, nodes counted when the collection opened)
    nodes = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            nodes += 1
            open_.append((event.anchor, nodes - 1))
            if len(open_) > MAX_DEPTH:
                raise UserError(f"{where}{_at(event)}: nested deeper than {MAX_DEPTH} levels (limit {MAX_DEPTH})")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, start = open_.pop()
            if anchor is not None:
                sizes[anchor] = nodes - start
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_):
                raise UserError(f"{where}{_at(event)}: alias *{event.anchor} refers to the collection it is in "
                                "(a cycle); write the values out")
            nodes += sizes.get(event.anchor, 1)
        else:
            continue
        if nodes > MAX_NODES:
            raise UserError(f"{where}{_at(event)}: more than {MAX_NODES:,} values once aliases are expanded "
                            f"(limit {MAX_NODES:,})")


def _at(event) -> str:
    mark = getattr(event, "start_mark", None)
    return f":{mark.line + 1}" if mark is not None else ""


def _line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f":{mark.line + 1}" if mark is not None else ""


def _problem(exc: yaml.YAMLError) -> str:
    """The reason of a PyYAML error in one line (its marks and snippet left out)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    text = f"{context}: {problem}" if context and context not in problem else problem
    return " ".join(str(text).split())
