"""Space: a YAML file of typed parameters that map onto the fields of a base Point.

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

import copy
import json
import math
import random
import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from dse.errors import Infeasible, UserError
from dse.space.expr import FUNCTIONS, Expr
from dse.point import Head, Point, Stage, Stem

KEYS = ("description", "base", "geometry", "params", "derived", "checks", "set", "constraints", "grid")
PARAM_KEYS = {
    "int": ("type", "low", "high", "step", "log", "default", "per_stage", "when", "help"),
    "float": ("type", "low", "high", "step", "log", "default", "per_stage", "when", "help"),
    "log": ("type", "low", "high", "default", "per_stage", "when", "help"),
    "choice": ("type", "values", "default", "per_stage", "when", "help"),
    "fixed": ("type", "value", "per_stage", "when", "help"),
}
GEOMETRY = ("image_size", "in_chans", "num_classes")
CONSTRAINTS = ("flops", "params", "acts", "rf")  # fields of dse.cost.measures
RESERVED = set(GEOMETRY) | set(FUNCTIONS) | {"i", "value", "True", "False", "None"}
MAX_DRAWS = 2000  # feasible sampling gives up after this many draws
MAX_ENUMERATE = 200_000  # checks are verified on at most this many combinations at load
TARGET = re.compile(r"^(?:stages\[(\*|-?\d+)\]\.(\w+)|(stem|head)\.(\w+)|(\w+))$")


@dataclass(frozen=True)
class Param:
    """One searchable dimension. `type` is int, float, choice or fixed (`log` files load as float, log=True)."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    values: tuple = ()
    default: object = None
    when: Expr | None = None
    group: str = ""  # per-stage params: the name before `_i`
    stage: int | None = None
    help: str = ""

    def choices(self) -> list | None:
        """All values of a finite param (choice, fixed, int), else None."""
        if self.type in ("choice", "fixed"):
            return list(self.values)
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1))
        return None

    def label(self, value):
        """The value as Optuna stores it (JSON text for lists)."""
        return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, tuple, dict)) else value

    def decode(self, stored):
        """Inverse of `label`, checked against the param's range."""
        if self.type in ("choice", "fixed"):
            for v in self.values:
                if self.label(v) == stored or v == stored:
                    return v
            raise UserError(f"{self.name}: {stored!r} is not a choice; valid: "
                            f"{', '.join(str(self.label(v)) for v in self.values)}")
        if not isinstance(stored, (int, float)) or isinstance(stored, bool) or not self.low <= stored <= self.high:
            raise UserError(f"{self.name}: {stored!r} is outside [{self.low}, {self.high}]")
        if self.type == "int":
            if stored != int(stored):
                raise UserError(f"{self.name}: {stored!r} is not an integer")
            return int(stored)
        return float(stored)

    def sample(self, rng: random.Random):
        """A random value (uniform, or log-uniform with log)."""
        if self.type in ("choice", "fixed"):
            return self.values[rng.randrange(len(self.values))]
        if self.type == "int":
            if self.log:
                x = math.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5)))
                return min(int(self.high), max(int(self.low), int(round(x))))
            return rng.randrange(int(self.low), int(self.high) + 1, int(self.step or 1))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        if self.step:
            steps = int(round((self.high - self.low) / self.step))
            return min(self.high, self.low + self.step * rng.randrange(steps + 1))
        return rng.uniform(self.low, self.high)

    def suggest(self, trial):
        """Ask an Optuna trial for this param."""
        if self.type == "fixed":
            return self.values[0]
        if self.type == "choice":
            return self.decode(trial.suggest_categorical(self.name, [self.label(v) for v in self.values]))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class Target:
    """Where a `set` entry writes: part is stages/stem/head/point, index a stage (None: all), field a name."""

    key: str
    part: str
    index: int | None
    field: str
    expr: Expr | None
    literal: object = None


class Space:
    """A parsed space file. Build Points with `point(values)`, `sample(seed)`, `suggest(trial)`, `grid()`."""

    def __init__(self, name, description, base, geometry, params, derived, checks, targets, constraints, grids,
                 path=None):
        self.name, self.description, self.base, self.path = name, description, base, path
        self.geometry = geometry
        self.params: dict[str, Param] = params
        self.derived: dict[str, Expr] = derived
        self.checks: list[tuple[Expr, str]] = checks
        self.targets: list[Target] = targets
        self.specs: dict[str, dict] = constraints  # bounds as written (numbers or geometry expressions)
        self.grids: dict[str, list[dict]] = grids
        self._base_dict = base.to_dict()
        self.groups = _groups(params)

    def __repr__(self) -> str:
        return f"Space({self.name!r}, {len(self.params)} params)"

    # ----- geometry and constraints -----
    def with_geometry(self, image_size: int | None = None, in_chans: int | None = None,
                      num_classes: int | None = None) -> "Space":
        """A copy whose points have this data geometry (None keeps the current value)."""
        new = copy.copy(self)
        new.geometry = _geometry(f"{self.name}: geometry", {**self.geometry, **{k: v for k, v in dict(
            image_size=image_size, in_chans=in_chans, num_classes=num_classes).items() if v is not None}})
        return new

    def with_constraints(self, **bounds) -> "Space":
        """A copy with these constraints replaced, e.g. with_constraints(flops={'max': 1e8})."""
        new = copy.copy(self)
        new.specs = {**self.specs, **_constraints(f"{self.name}: constraints", bounds)}
        return new

    @property
    def constraints(self) -> dict[str, dict[str, float]]:
        """Bounds at the space's geometry: {'flops': {'max': 2e8}, 'params': {'min': ..., 'max': ...}}."""
        env = dict(self.geometry)
        return {key: {side: _bound(v, env, f"constraints.{key}.{side}") for side, v in spec.items()}
                for key, spec in self.specs.items()}

    def bounds(self, point: Point) -> dict[str, tuple[float | None, float | None]]:
        """(min, max) per constrained quantity at the point's geometry."""
        env = {k: getattr(point, k) for k in GEOMETRY}
        out = {}
        for key, spec in self.specs.items():
            out[key] = tuple(_bound(spec.get(side), env, f"constraints.{key}.{side}") for side in ("min", "max"))
        return out

    def violations(self, point: Point) -> dict[str, float]:
        """Relative violation per bound ('flops.max': (flops - max) / max, ...): feasible when all <= 0."""
        if not self.specs:
            return {}
        from dse.cost import measures

        counts = measures(point)._asdict()
        out = {}
        for key, (lo, hi) in self.bounds(point).items():
            if lo is not None:
                out[f"{key}.min"] = (lo - counts[key]) / lo
            if hi is not None:
                out[f"{key}.max"] = (counts[key] - hi) / hi
        return out

    def check(self, point: Point) -> list[str]:
        """The violated constraints of `point`, as readable lines (empty when feasible)."""
        if not self.specs:
            return []
        from dse.cost import measures

        counts = measures(point)._asdict()
        out = []
        for key, (lo, hi) in self.bounds(point).items():
            if lo is not None and counts[key] < lo:
                out.append(f"{key} {counts[key]:.4g} < min {lo:.4g}")
            if hi is not None and counts[key] > hi:
                out.append(f"{key} {counts[key]:.4g} > max {hi:.4g}")
        return out

    # ----- values -> Point -----
    def default_values(self) -> dict:
        """Every active param at its default."""
        values: dict = {}
        for p in self.params.values():
            values[p.name] = p.default if self._active(p, values) else None
        return values

    def _env(self, values: dict) -> dict:
        env = dict(self.geometry)
        for group, members in self.groups.items():
            env[group] = [values.get(m) for m in members]
        env.update(values)
        return env

    def _active(self, p: Param, values: dict) -> bool:
        if p.when is None:
            return True
        env = self._env(values)
        if p.stage is not None:
            env["i"] = p.stage
        return bool(p.when(env))

    def resolve(self, values: dict) -> dict:
        """Params (decoded, inactive ones None) plus derived values; raises Infeasible on a failed check."""
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise UserError(f"{self.name}: unknown param {unknown[0]!r}; valid: {', '.join(self.params)}")
        full: dict = {}
        for p in self.params.values():
            if not self._active(p, full):
                full[p.name] = None
            elif p.name in values and values[p.name] is not None:
                full[p.name] = p.decode(values[p.name])
            else:
                full[p.name] = p.default
        env = self._env(full)
        for name, expr in self.derived.items():
            env[name] = expr(env)
        for expr, message in self.checks:
            if not expr(env):
                raise Infeasible(f"{self.name}: {_format(message, env)}")
        return env

    def point(self, values: dict | None = None, **geometry) -> Point:
        """The Point for these param values (missing ones take their defaults), at the space's geometry."""
        space = self.with_geometry(**geometry) if geometry else self
        return space._point(space.resolve(values or {}))

    def _point(self, env: dict) -> Point:
        data = copy.deepcopy(self._base_dict)
        data.update(self.geometry)
        data["name"] = self.name
        n = len(data["stages"])
        for t in self.targets:
            if t.part == "stages":
                indexes = range(n) if t.index is None else [t.index]
                for i in indexes:
                    stage = data["stages"][i]
                    local = {**env, "i": i, "value": stage[t.field]}
                    for group, members in self.groups.items():
                        if i < len(members):
                            local[group] = env[members[i]]
                    _assign(stage, t, local, f"{self.name}: set {t.key} (stage {i})")
            else:
                holder = data if t.part == "point" else data[t.part]
                _assign(holder, t, {**env, "value": holder[t.field]}, f"{self.name}: set {t.key}")
        try:
            return Point.from_dict(data)
        except UserError as exc:
            raise UserError(f"{self.name}: invalid point ({exc}) for {_short(env, self.params)}") from None

    # ----- drawing points -----
    def sample_values(self, rng) -> dict:
        """Random param values (inactive ones None), from a seed or a random.Random."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        values: dict = {}
        for p in self.params.values():
            values[p.name] = p.sample(rng) if self._active(p, values) else None
        return values

    def sample(self, seed=0, feasible: bool = True, **geometry) -> Point:
        """A random Point; with `feasible`, redraw until checks and constraints hold."""
        return self.sample_with_values(seed, feasible, **geometry)[0]

    def sample_with_values(self, seed=0, feasible: bool = True, **geometry) -> tuple[Point, dict]:
        """Like sample, also returning the param values."""
        space = self.with_geometry(**geometry) if geometry else self
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        for _ in range(MAX_DRAWS if feasible else 1):
            values = space.sample_values(rng)
            try:
                point = space.point(values)
            except Infeasible:
                if not feasible:
                    raise
                continue
            if not feasible or not space.check(point):
                return point, values
        raise UserError(f"{self.name}: no feasible point in {MAX_DRAWS} draws at {space.geometry}; "
                        f"constraints: {space.constraints}")

    def suggest(self, trial, **geometry) -> Point:
        """Define-by-run: ask the Optuna trial for every active param, return the Point.

        Raises Infeasible when the values break a check; constraints are not enforced here (use
        `violations(point)` with `trial.set_constraint`, or `check(point)` to prune).
        """
        space = self.with_geometry(**geometry) if geometry else self
        values: dict = {}
        for p in space.params.values():
            values[p.name] = p.suggest(trial) if space._active(p, values) else None
        return space.point({k: v for k, v in values.items() if v is not None})

    def grid_names(self) -> list[str]:
        """Names of the explicit grids in the file."""
        return list(self.grids)

    def grid_values(self, name: str | None = None) -> list[dict]:
        """Param values of a grid: the named one, the file's only/first one, or all choice params crossed."""
        if name is not None:
            if name not in self.grids:
                raise UserError(f"{self.name}: unknown grid {name!r}; valid: {', '.join(self.grids) or '(none)'}")
            entries = self.grids[name]
        elif self.grids:
            entries = next(iter(self.grids.values()))
        else:
            entries = self._cartesian()
        out, seen = [], set()
        for entry in entries:
            full = self.resolve(entry)
            values = {p: full[p] for p in self.params}
            key = json.dumps(values, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(values)
        return out

    def grid(self, name: str | None = None, **geometry) -> list[Point]:
        """The grid's Points (see grid_values)."""
        space = self.with_geometry(**geometry) if geometry else self
        return [space.point(v) for v in space.grid_values(name)]

    def _cartesian(self) -> list[dict]:
        combos: list[dict] = [{}]
        for p in self.params.values():
            if p.type != "choice":
                continue
            combos = [{**c, p.name: v} for c in combos for v in p.values]
        return combos

    # ----- load-time validation -----
    def validate(self, n: int = 64, seed: int = 0) -> None:
        """Raise UserError when checks fail for some combination, a point is invalid, or no point is feasible."""
        self._verify_checks()
        self.point(self.default_values())
        rng = random.Random(seed)
        best: dict[str, float] = {}
        feasible = False
        for _ in range(n):
            values = self.sample_values(rng)
            try:
                point = self.point(values)
            except Infeasible:  # a rule that refuses some draws (e.g. regnet's stage count): not a broken file
                continue
            v = self.violations(point)
            if all(x <= 0 for x in v.values()):
                feasible = True
            for k, x in v.items():
                best[k] = min(best.get(k, math.inf), x)
        for name in self.grids:
            for values in self.grid_values(name):
                self.point(values)
        if not feasible and n:
            worst = max(best, key=best.get)
            raise UserError(f"{self.name}: constraints cannot be met: none of {n} sampled points satisfies "
                            f"{worst} (closest is {best[worst]:+.0%} off); constraints: {self.constraints}")

    def _verify_checks(self) -> None:
        """Evaluate every check on all combinations of the finite params it depends on."""
        for expr, message in self.checks:
            needed = self._depends(expr.names)
            dims = []
            for name in needed:
                p = self.params[name]
                options = p.choices()
                dims.append((name, options if options is not None else [p.low, p.high]))
            size = math.prod(len(d[1]) for d in dims)
            if size > MAX_ENUMERATE:
                continue
            combos: list[dict] = [{}]
            for name, options in dims:
                combos = [{**c, name: v} for c in combos for v in options]
            for combo in combos:
                values = {**self.default_values(), **combo}
                full = {}
                for p in self.params.values():
                    full[p.name] = values[p.name] if self._active(p, full) else None
                env = self._env(full)
                for name, d in self.derived.items():
                    env[name] = d(env)
                if not expr(env):
                    raise UserError(f"{self.name}: checks: {_format(message, env)}")

    def _depends(self, names: set[str]) -> list[str]:
        """Params an expression reads, following derived values and per-stage groups."""
        out, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in self.params:
                out.add(name)
            elif name in self.groups:
                todo += self.groups[name]
            elif name in self.derived:
                todo += self.derived[name].names
        return [p for p in self.params if p in out]


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
        raise UserError(f"space file {text!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: malformed YAML: {problem}") from None
    return parse(data, path.stem, path, validate)


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
    geometry = _geometry(f"{where}: geometry", {**{k: getattr(base, k) for k in GEOMETRY},
                                                 **_mapping(f"{where}: geometry", data.get("geometry") or {})})
    params = _params(where, data["params"], len(base.stages))
    groups = _groups(params)
    known = set(params) | set(groups) | set(GEOMETRY)
    derived = {}
    for key, text in _mapping(f"{where}: derived", data.get("derived") or {}).items():
        _name_ok(f"{where}: derived", key, set(params) | set(groups))
        derived[key] = _expr(f"{where}: derived.{key}", text, known)
        known.add(key)
    checks = _checks(where, data.get("checks") or [], known)
    targets = _targets(where, data.get("set") or {}, known, groups, len(base.stages))
    constraints = _constraints(f"{where}: constraints", data.get("constraints") or {})
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise UserError(f"{where}: description must be a string")
    space = Space(name, description.strip(), base, geometry, params, derived, checks, targets, constraints, {}, path)
    space.grids = _grids(where, data.get("grid"), space)
    if validate:
        space.validate()
    return space


def _mapping(where: str, data) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{where}: must be a mapping, got {data!r}")
    return data


def _base(where: str, data) -> Point:
    if isinstance(data, str):
        from dse import zoo

        try:
            return zoo.get(data)
        except UserError as exc:
            raise UserError(f"{where}: base: {exc}") from None
    try:
        return Point.from_dict(_mapping(f"{where}: base", data))
    except UserError as exc:
        raise UserError(f"{where}: base: {exc}") from None


def _geometry(where: str, data: dict) -> dict:
    extra = sorted(set(data) - set(GEOMETRY))
    if extra:
        raise UserError(f"{where}: unknown key {extra[0]!r}; valid: {', '.join(GEOMETRY)}")
    for k, v in data.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UserError(f"{where}.{k}: must be a positive integer, got {v!r}")
    return {k: data[k] for k in GEOMETRY}


def _name_ok(where: str, name, taken: set) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise UserError(f"{where}: {name!r} is not a valid name (letters, digits, _)")
    if name in RESERVED or name in taken:
        raise UserError(f"{where}: name {name!r} is reserved or already used")


def _params(where: str, data, n_stages: int) -> dict[str, Param]:
    data = _mapping(f"{where}: params", data)
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
        when = _expr(f"{at}.when", spec["when"], known) if "when" in spec else None
        proto = _param(at, name, kind, spec, when)
        count = spec.get("per_stage", False)
        if count is True:
            count = n_stages
        if count is False:
            out[name] = proto
            continue
        if not isinstance(count, int) or count < 1:
            raise UserError(f"{at}.per_stage: must be true or a positive number of stages, got {count!r}")
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
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and v != int(v)):
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
            raise UserError(f"{at}.values: needs a non-empty list of choices, got {values!r}")
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


def _groups(params: dict[str, Param]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in params.values():
        if p.group:
            out.setdefault(p.group, []).append(p.name)
    return out


def _expr(where: str, text, known: set) -> Expr:
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UserError(f"{where}: must be an expression string or a number, got {text!r}")
    expr = Expr(str(text), where)
    unknown = sorted(expr.names - known)
    if unknown:
        raise UserError(f"{where}: unknown name {unknown[0]!r} in {text!r}; known here: {', '.join(sorted(known))}")
    return expr


def _checks(where: str, data, known: set) -> list[tuple[Expr, str]]:
    if not isinstance(data, list):
        raise UserError(f"{where}: checks: must be a list of {{expr, message}} mappings")
    out = []
    for j, item in enumerate(data):
        at = f"{where}: checks[{j}]"
        if isinstance(item, str):
            item = {"expr": item}
        if not isinstance(item, dict) or "expr" not in item or set(item) - {"expr", "message"}:
            raise UserError(f"{at}: must be an expression or a mapping with keys expr, message")
        expr = _expr(at, item["expr"], known)
        out.append((expr, str(item.get("message", f"check failed: {item['expr']}"))))
    return out


def _targets(where: str, data, known: set, groups: dict, n_stages: int) -> list[Target]:
    out = []
    parts = {"stages": Stage, "stem": Stem, "head": Head, "point": Point}
    for key, value in _mapping(f"{where}: set", data).items():
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
            out.append(Target(key, part, index, field, _expr(at, value, scope)))
        else:
            names = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v in scope]
            if names:
                raise UserError(f"{at}: {names[0]!r} in a YAML list is a literal string; to use the name, "
                                f"write the whole value as an expression string, e.g. \"[{names[0]}]\"")
            out.append(Target(key, part, index, field, None, value))
    return out


def _constraints(where: str, data: dict) -> dict[str, dict]:
    out = {}
    for key, spec in _mapping(where, data).items():
        if key not in CONSTRAINTS:
            raise UserError(f"{where}: unknown key {key!r}; valid: {', '.join(CONSTRAINTS)}")
        spec = _mapping(f"{where}.{key}", spec)
        extra = sorted(set(spec) - {"min", "max"})
        if extra:
            raise UserError(f"{where}.{key}: unknown key {extra[0]!r}; valid: min, max")
        clean = {}
        for side, v in spec.items():
            if v is None:
                continue
            if isinstance(v, str):
                clean[side] = _expr(f"{where}.{key}.{side}", v, set(GEOMETRY))
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
                clean[side] = float(v)
            else:
                raise UserError(f"{where}.{key}.{side}: must be a positive number or an expression, got {v!r}")
        lo, hi = clean.get("min"), clean.get("max")
        if isinstance(lo, float) and isinstance(hi, float) and lo > hi:
            raise UserError(f"{where}.{key}: min {lo:g} is above max {hi:g}")
        out[key] = clean
    return out


def _bound(spec, env: dict, where: str):
    if spec is None:
        return None
    value = spec(env) if isinstance(spec, Expr) else spec
    if not isinstance(value, (int, float)) or value <= 0:
        raise UserError(f"{where}: bound must be a positive number, got {value!r}")
    return float(value)


def _grids(where: str, data, space: Space) -> dict[str, list[dict]]:
    if data is None:
        return {}
    named = data if isinstance(data, dict) else {"grid": data}
    out = {}
    for gname, entries in named.items():
        at = f"{where}: grid.{gname}" if isinstance(data, dict) else f"{where}: grid"
        if not isinstance(entries, list) or not entries:
            raise UserError(f"{at}: must be a non-empty list of param mappings")
        out[str(gname)] = [_grid_entry(f"{at}[{j}]", e, space) for j, e in enumerate(entries)]
    return out


def _grid_entry(at: str, entry, space: Space) -> dict:
    entry = _mapping(at, entry)
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


def _assign(holder: dict, t: Target, env: dict, where: str) -> None:
    value = t.expr(env) if t.expr is not None else t.literal
    if value is None:
        return
    current = holder[t.field]
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, float) and value == int(value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{where}: {t.field} needs an integer, got {value!r} (use int() or round())")
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif isinstance(current, list):
        value = [v for v in value] if isinstance(value, (list, tuple)) else [value]
    holder[t.field] = value


def _format(message: str, env: dict) -> str:
    """Replace {name} in a check message by its value (no attribute access)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(env.get(m.group(1), m.group(0))), message)


def _short(env: dict, params: dict) -> str:
    return ", ".join(f"{k}={env[k]!r}" for k in params if env.get(k) is not None)
