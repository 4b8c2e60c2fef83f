"""Space files: the parser that turns spaces/<name>.yaml into a dse.space.model.Space.

A space file (spaces/<name>.yaml) has these keys (only `base` and `params` are required):

    description: one line about the space
    base: wrn_28_10                 # a dse.zoo name, or an inline point mapping
    geometry: {image_size: 32, in_chans: 3, num_classes: 10}   # default data geometry
    params:                         # in order; later params and expressions may read earlier ones
      depth: {type: choice, values: [16, 22, 28, 40]}
      k: {type: int, low: 1, high: 12}          # also: step, log
      lr: {type: log, low: 1.0e-3, high: 1.0}   # float on a log scale (type float takes log: true too)
      width: {type: int, low: 8, high: 64, step: 8, per_stage: true}   # width_0 .. width_{n-1}
      attn_ratio: {type: choice, values: [0.0625, 0.25], when: "attention != 'none'"}
      act: {type: fixed, value: relu}
    derived: {n: "(depth - 4) // 6"}            # expressions over params (and geometry)
    checks:                                     # must hold for every combination; verified at load
      - {expr: "(depth - 4) % 6 == 0", message: "depth {depth} is not of the form 6N+4"}
    set:                                        # Point fields from expressions, in order
      stages[*].depth: n                        # stages[*]: every stage (`i` is its index)
      stages[1].width: 32 * k                   # stages[-1] counts from the end; stem.x, head.x too
    constraints: {flops: {max: 2.0e+8}, params: {min: 1.0e+5, max: "2e6 if image_size < 64 else 3e7"}}
    grid: [{depth: 16, k: 8}, {depth: 28, k: 10}]   # or {name: [...], ...}; default: all choice params

Expressions (dse.space.expr) see the params, the derived values, the geometry (image_size, in_chans,
num_classes) and, in `set`, `value` (the field's current value). A per-stage param `p` reads as the
list of its values, except in a `stages[*]` target, where it is the value of that stage. A param whose
`when` is false is inactive: it is None, and a `set` whose value is None keeps the base point's value.
Constraints bound FLOPs (multiply-adds) and params of a point at its own geometry; their bounds may be
expressions of the geometry. Choice values that Optuna cannot store (lists) are suggested as JSON labels.
"""
from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path

from dse import yamlfile
from dse.errors import UserError
from dse.point import MAX_STAGES, Head, Point, Stage, Stem
from dse.space.expr import FUNCTIONS, Expr
from dse.space.model import (GEOMETRY, MAX_CHOICES, MAX_EXPRESSIONS, MAX_GRID, MAX_PARAMS, Param, Space, Target,
                             checked_geometry, constraint_specs, expression, groups_of, mapping)
from dse import zoo

KEYS = ("description", "base", "geometry", "params", "derived", "checks", "set", "constraints", "grid")
PARAM_KEYS = {
    "int": ("type", "low", "high", "step", "log", "default", "per_stage", "when", "help"),
    "float": ("type", "low", "high", "step", "log", "default", "per_stage", "when", "help"),
    "log": ("type", "low", "high", "default", "per_stage", "when", "help"),
    "choice": ("type", "values", "default", "per_stage", "when", "help"),
    "fixed": ("type", "value", "per_stage", "when", "help"),
}
RESERVED = set(GEOMETRY) | set(FUNCTIONS) | {"i", "value", "True", "False", "None"}
TARGET = re.compile(r"^(?:stages\[(\*|-?\d+)\]\.(\w+)|(stem|head)\.(\w+)|(\w+))$")


# ----- loading -----
def spaces_dir() -> Path:
    """Where the shipped space files are: dse/spaces (a link to the checkout's spaces/, a copy when installed)."""
    here = Path(__file__).resolve().parent.parent / "spaces"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "spaces"


def names() -> list[str]:
    """Names of the shipped spaces."""
    return sorted(p.stem for p in spaces_dir().glob("*.yaml"))


def load(name_or_path, validate: bool = True) -> Space:
    """Load a shipped space by name, or a space file by path; validated unless told otherwise."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or "/" in text or path.is_file()):
        known = names()
        if text not in known:
            raise UserError(f"unknown space {text!r}; valid: {', '.join(known)}")
        path = spaces_dir() / f"{text}.yaml"
    if not path.is_file():
        raise UserError(f"space file {text!r} " + ("is not a file" if path.exists() else "does not exist"))
    return parse(yamlfile.read(path, "space file"), path.stem, path, validate)


def parse(data, name: str, path=None, validate: bool = True) -> Space:
    """Build a Space from the mapping of a space file (e.g. a Hydra config turned into a dict)."""
    where = str(path or name)
    if not isinstance(data, dict):
        raise UserError(f"{where}: a space file must be a mapping with keys {', '.join(KEYS)}")
    extra = sorted(set(data) - set(KEYS))
    if extra:
        raise UserError(f"{where}: unknown key {extra[0]!r}; valid: {', '.join(KEYS)}")
    if "base" not in data or "params" not in data:
        raise UserError(f"{where}: needs 'base' (a zoo name or a point mapping) and 'params'")
    base = _base(where, data["base"])
    geometry = checked_geometry(f"{where}: geometry", {**{k: getattr(base, k) for k in GEOMETRY},
                                                 **mapping(f"{where}: geometry", data.get("geometry") or {})})
    params = _params(where, data["params"], len(base.stages))
    groups = groups_of(params)
    known = set(params) | set(groups) | set(GEOMETRY)
    derived = {}
    for key, text in _bounded(f"{where}: derived", mapping(f"{where}: derived", data.get("derived") or {})).items():
        _name_ok(f"{where}: derived", key, set(params) | set(groups))
        derived[key] = expression(f"{where}: derived.{key}", text, known)
        known.add(key)
    checks = _checks(where, data.get("checks") or [], known)
    targets = _targets(where, data.get("set") or {}, known, groups, len(base.stages))
    constraints = constraint_specs(f"{where}: constraints", data.get("constraints") or {})
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise UserError(f"{where}: description must be a string")
    space = Space(name, description.strip(), base, geometry, params, derived, checks, targets, constraints, {}, path)
    space.grids = _grids(where, data.get("grid"), space)
    if validate:
        space.validate()
    return space


def _base(where: str, data) -> Point:
    if isinstance(data, str):
        try:
            return zoo.get(data)
        except UserError as exc:
            raise UserError(f"{where}: base: {exc}") from None
    try:
        return Point.from_dict(mapping(f"{where}: base", data))
    except UserError as exc:
        raise UserError(f"{where}: base: {exc}") from None


def _name_ok(where: str, name, taken: set) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise UserError(f"{where}: {name!r} is not a valid name (letters, digits, _)")
    if name in RESERVED or name in taken:
        raise UserError(f"{where}: name {name!r} is reserved or already used")


def _params(where: str, data, n_stages: int) -> dict[str, Param]:
    data = mapping(f"{where}: params", data)
    if not data:
        raise UserError(f"{where}: params: the space is empty; give at least one param")
    out: dict[str, Param] = {}
    groups: set[str] = set()
    for name, spec in data.items():
        at = f"{where}: params.{name}"
        _name_ok(at, name, set(out) | groups)
        if isinstance(spec, list):
            spec = {"type": "choice", "values": spec}
        elif not isinstance(spec, dict):
            spec = {"type": "fixed", "value": spec}
        kind = spec.get("type")
        if kind not in PARAM_KEYS:
            raise UserError(f"{at}.type: unknown param type {kind!r}; valid: {', '.join(PARAM_KEYS)}")
        extra = sorted(set(spec) - set(PARAM_KEYS[kind]))
        if extra:
            raise UserError(f"{at}: unknown key {extra[0]!r} for type {kind}; valid: {', '.join(PARAM_KEYS[kind])}")
        known = set(GEOMETRY) | set(out) | groups | {"i"}
        when = expression(f"{at}.when", spec["when"], known) if "when" in spec else None
        proto = _param(at, name, kind, spec, when)
        count = spec.get("per_stage", False)
        if count is True:
            count = n_stages
        if count is False:
            if len(out) >= MAX_PARAMS:
                raise UserError(f"{where}: params: over the limit of {MAX_PARAMS} params")
            out[name] = proto
            continue
        if not isinstance(count, int) or count < 1:
            raise UserError(f"{at}.per_stage: must be true or a positive number of stages, got {count!r}")
        if count > MAX_STAGES:
            raise UserError(f"{at}.per_stage: {count} stages is over the limit of {MAX_STAGES}")
        if len(out) + count > MAX_PARAMS:
            raise UserError(f"{where}: params: over the limit of {MAX_PARAMS} params (a per-stage param counts "
                            "one per stage)")
        groups.add(name)
        for i in range(count):
            member = f"{name}_{i}"
            _name_ok(at, member, set(out))
            out[member] = Param(**{**proto.__dict__, "name": member, "group": name, "stage": i})
    return out


def _number(at: str, spec: dict, key: str, integer: bool):
    v = spec.get(key)
    if v is None:
        raise UserError(f"{at}: needs '{key}'")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (integer and v != int(v)):
        raise UserError(f"{at}.{key}: must be {'an integer' if integer else 'a number'}, got {v!r}")
    return int(v) if integer else float(v)


def _param(at: str, name: str, kind: str, spec: dict, when) -> Param:
    common = dict(name=name, when=when, help=str(spec.get("help", "")))
    if kind == "fixed":
        if "value" not in spec:
            raise UserError(f"{at}: needs 'value'")
        return Param(type="fixed", values=(spec["value"],), default=spec["value"], **common)
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise UserError(f"{at}.values: needs a non-empty list of choices, got {_short(values)}")
        if len(values) > MAX_CHOICES:
            raise UserError(f"{at}.values: {len(values):,} choices is over the limit of {MAX_CHOICES:,}")
        default = spec.get("default", values[0])
        if default not in values:
            raise UserError(f"{at}.default: {default!r} is not one of the values {values}")
        return Param(type="choice", values=tuple(values), default=default, **common)
    integer = kind == "int"
    low, high = _number(at, spec, "low", integer), _number(at, spec, "high", integer)
    log = kind == "log" or bool(spec.get("log", False))
    step = spec.get("step")
    if low > high:
        raise UserError(f"{at}: low {low} is above high {high}")
    if log and low <= 0:
        raise UserError(f"{at}: a log scale needs low > 0, got {low}")
    if step is not None:
        step = _number(at, spec, "step", integer)
        if step <= 0 or log:
            raise UserError(f"{at}.step: must be > 0 and cannot be combined with log")
        if abs(round((high - low) / step) * step - (high - low)) > 1e-9 * max(1.0, abs(high)):
            raise UserError(f"{at}.step: high - low = {high - low} is not a multiple of step {step}")
    default = spec.get("default", low)
    if not isinstance(default, (int, float)) or not low <= default <= high:
        raise UserError(f"{at}.default: {default!r} is outside [{low}, {high}]")
    return Param(type="int" if integer else "float", low=low, high=high, step=step, log=log,
                 default=int(default) if integer else float(default), **common)


def _checks(where: str, data, known: set) -> list[tuple[Expr, str]]:
    if not isinstance(data, list):
        raise UserError(f"{where}: checks: must be a list of {{expr, message}} mappings")
    _bounded(f"{where}: checks", data)
    out = []
    for j, item in enumerate(data):
        at = f"{where}: checks[{j}]"
        if isinstance(item, str):
            item = {"expr": item}
        if not isinstance(item, dict) or "expr" not in item or set(item) - {"expr", "message"}:
            raise UserError(f"{at}: must be an expression or a mapping with keys expr, message")
        expr = expression(at, item["expr"], known)
        out.append((expr, str(item.get("message", f"check failed: {item['expr']}"))))
    return out


def _targets(where: str, data, known: set, groups: dict, n_stages: int) -> list[Target]:
    out = []
    parts = {"stages": Stage, "stem": Stem, "head": Head, "point": Point}
    for key, value in _bounded(f"{where}: set", mapping(f"{where}: set", data)).items():
        at = f"{where}: set.{key}"
        m = TARGET.match(str(key))
        if not m:
            raise UserError(f"{at}: not a point field; write stages[*].f, stages[i].f, stem.f, head.f or f")
        star, sfield, part, pfield, top = m.groups()
        index = None
        if sfield:
            part, field = "stages", sfield
            if star != "*":
                index = int(star)
                if not -n_stages <= index < n_stages:
                    raise UserError(f"{at}: stage {index} does not exist; the base point has {n_stages} stages")
                index %= n_stages
        elif part:
            field = pfield
        else:
            part, field = "point", top
        valid = [f.name for f in fields(parts[part])]
        if part == "point":
            valid = [f for f in valid if f not in ("stages", "stem", "head", "name") + GEOMETRY]
        if field not in valid:
            where_part = {"point": "Point", "stages": "Stage", "stem": "Stem", "head": "Head"}[part]
            raise UserError(f"{at}: {field!r} is not a {where_part} field; valid: {', '.join(valid)}")
        scope = known | {"value"} | ({"i"} if part == "stages" else set())
        if isinstance(value, str):
            out.append(Target(key, part, index, field, expression(at, value, scope)))
        else:
            names = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v in scope]
            if names:
                raise UserError(f"{at}: {names[0]!r} in a YAML list is a literal string; to use the name, "
                                f"write the whole value as an expression string, e.g. \"[{names[0]}]\"")
            out.append(Target(key, part, index, field, None, value))
    return out


def _grids(where: str, data, space: Space) -> dict[str, list[dict]]:
    if data is None:
        return {}
    named = data if isinstance(data, dict) else {"grid": data}
    _bounded(f"{where}: grid (number of grids)", named, MAX_GRID)
    out = {}
    for gname, entries in named.items():
        at = f"{where}: grid.{gname}" if isinstance(data, dict) else f"{where}: grid"
        if not isinstance(entries, list) or not entries:
            raise UserError(f"{at}: must be a non-empty list of param mappings")
        _bounded(at, entries, MAX_GRID)
        out[str(gname)] = [_grid_entry(f"{at}[{j}]", e, space) for j, e in enumerate(entries)]
    return out


def _bounded(at: str, items, limit: int = MAX_EXPRESSIONS):
    """`items` (a list or mapping), or a UserError when it has more than `limit` entries."""
    if len(items) > limit:
        raise UserError(f"{at}: {len(items):,} entries is over the limit of {limit:,}")
    return items


def _short(value) -> str:
    """repr of a value, cut to 80 characters (a hostile file's values can be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _grid_entry(at: str, entry, space: Space) -> dict:
    entry = mapping(at, entry)
    values = {}
    for key, v in entry.items():
        if key in space.groups:
            members = space.groups[key]
            per = v if isinstance(v, list) and len(v) == len(members) else [v] * len(members)
            values.update(zip(members, per))
        elif key in space.params:
            values[key] = v
        else:
            valid = list(space.params) + list(space.groups)
            raise UserError(f"{at}: unknown param {key!r}; valid: {', '.join(valid)}")
    try:
        space.resolve(values)
    except UserError as exc:
        raise UserError(f"{at}: {exc}") from None
    return values
