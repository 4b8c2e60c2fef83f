"""The Space model: typed parameters over a base Point, their checks, `set` targets and constraints.

A Space turns param values into Points (`point`, `sample`, `suggest`, `grid`) and bounds their costs.
dse.space.parse makes one from a space file (the file format is described there).
"""
from __future__ import annotations

import copy
import json
import math
import random
import re
from dataclasses import dataclass

from dse.cost import measures
from dse.errors import Infeasible, UserError
from dse.point import Point
from dse.space.expr import Expr

GEOMETRY = ("image_size", "in_chans", "num_classes")
CONSTRAINTS = ("flops", "params", "acts", "rf")  # fields of dse.cost.measures
MAX_DRAWS = 2000  # feasible sampling gives up after this many draws
MAX_ENUMERATE = 200_000  # checks are verified on at most this many combinations at load, all checks together
# Bounds on the counts a space file sets, far above the shipped spaces (at most 15 params, 6 choices per param,
# 13 `set` targets, 4 derived values, 10 grid entries; anynet's choices cross to 419,904 combinations).
MAX_PARAMS = 1000  # params, per-stage members counted one by one
MAX_CHOICES = 1000  # values of one choice param
MAX_EXPRESSIONS = 200  # derived values, checks and `set` targets, each
MAX_GRID = 10_000  # entries of one grid in the file; also how many grids
MAX_CROSS = 1_000_000  # combinations of the choice params crossed (a grid study of a space without a grid)


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

    def count(self) -> int | None:
        """How many values `choices` would list (None: not finite), without listing them."""
        if self.type in ("choice", "fixed"):
            return len(self.values)
        if self.type == "int":
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
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
        self.groups = groups_of(params)

    def __repr__(self) -> str:
        return f"Space({self.name!r}, {len(self.params)} params)"

    # ----- geometry and constraints -----
    def with_geometry(self, image_size: int | None = None, in_chans: int | None = None,
                      num_classes: int | None = None) -> "Space":
        """A copy whose points have this data geometry (None keeps the current value)."""
        new = copy.copy(self)
        new.geometry = checked_geometry(f"{self.name}: geometry", {**self.geometry, **{k: v for k, v in dict(
            image_size=image_size, in_chans=in_chans, num_classes=num_classes).items() if v is not None}})
        return new

    def with_constraints(self, **bounds) -> "Space":
        """A copy with these constraints replaced, e.g. with_constraints(flops={'max': 1e8})."""
        new = copy.copy(self)
        new.specs = {**self.specs, **constraint_specs(f"{self.name}: constraints", bounds)}
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
        size = math.prod(len(p.values) for p in self.params.values() if p.type == "choice")
        if size > MAX_CROSS:
            raise UserError(f"{self.name}: grid: its choice params cross to {size:,} combinations (limit "
                            f"{MAX_CROSS:,}); give the space file a `grid:` of the cells to run")
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
        """Evaluate every check on all combinations of the finite params it depends on (MAX_ENUMERATE in all)."""
        budget = MAX_ENUMERATE
        for expr, message in self.checks:
            needed = self._depends(expr.names)
            size = math.prod(self.params[name].count() or 2 for name in needed)  # low and high of a float
            if size > budget:
                continue
            budget -= size
            dims = []
            for name in needed:
                p = self.params[name]
                options = p.choices()
                dims.append((name, options if options is not None else [p.low, p.high]))
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


def mapping(where: str, data) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{where}: must be a mapping, got {data!r}")
    return data


def checked_geometry(where: str, data: dict) -> dict:
    extra = sorted(set(data) - set(GEOMETRY))
    if extra:
        raise UserError(f"{where}: unknown key {extra[0]!r}; valid: {', '.join(GEOMETRY)}")
    for k, v in data.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UserError(f"{where}.{k}: must be a positive integer, got {v!r}")
    return {k: data[k] for k in GEOMETRY}


def groups_of(params: dict[str, Param]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in params.values():
        if p.group:
            out.setdefault(p.group, []).append(p.name)
    return out


def expression(where: str, text, known: set) -> Expr:
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UserError(f"{where}: must be an expression string or a number, got {text!r}")
    expr = Expr(str(text), where)
    unknown = sorted(expr.names - known)
    if unknown:
        raise UserError(f"{where}: unknown name {unknown[0]!r} in {text!r}; known here: {', '.join(sorted(known))}")
    return expr


def constraint_specs(where: str, data: dict) -> dict[str, dict]:
    out = {}
    for key, spec in mapping(where, data).items():
        if key not in CONSTRAINTS:
            raise UserError(f"{where}: unknown key {key!r}; valid: {', '.join(CONSTRAINTS)}")
        spec = mapping(f"{where}.{key}", spec)
        extra = sorted(set(spec) - {"min", "max"})
        if extra:
            raise UserError(f"{where}.{key}: unknown key {extra[0]!r}; valid: min, max")
        clean = {}
        for side, v in spec.items():
            if v is None:
                continue
            if isinstance(v, str):
                clean[side] = expression(f"{where}.{key}.{side}", v, set(GEOMETRY))
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
