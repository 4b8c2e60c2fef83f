"""Study files (studies/<name>.yaml): what to search, how long, for which objectives, and ablation grids.

Schema (every key optional except where said):

    name: my_study            # run directory runs/<name>/ and the Optuna study name (required)
    space: resnext            # the space it is written for; `space=` on the command line may fill it
    n_trials: 20              # total trials, counted across resumes and workers
    timeout: null             # seconds per invocation (the trial in flight stops and is re-queued at the end)
    trials_per_timeout: null  # size data.subset (measured before the first trial) so ~N trials fit the timeout
    seeds: 1                  # training repeats per grid cell, or per sampled point (mean ± std recorded)
    noise_after: 3            # sampled studies with seeds 1: once 3 points are trained, the fastest of them is trained
                              # again with the next seed (one trial of n_trials) for a seed-noise estimate; 0: never
    objectives: [accuracy, flops]   # accuracy|error plus optionally flops, params; directions implied
    sampler: auto             # default sampler when `sampler=` is not given (auto, tpe, nsga2, gp, grid, random);
                              # auto (dse.trials.sampling.auto): grid for grids, gp up to 200 trials, tpe beyond
    pruner: none              # single-objective only: none, median, halving, hyperband; or dominance
                              # (multi-objective, needs a cost objective: dse.trials.dominance)
    moasha: {eta: 3, min_rung: 1, rung_score: train_loss}   # multi-objective successive halving
                              # (dse.trials.moasha): keep the top 1/eta at rungs min_rung x eta^k epochs, ranked
                              # by the epoch's mean training loss (train_loss) or the validation accuracy
                              # (val_acc; under wsd after a decay branch); replayed by bench/search_efficiency.py
    grid:                     # an ablation: fixed cells instead of sampling
      - {label: wrn_28_10, point: wrn_28_10}           # a zoo name
      - {label: custom, point: {stages: [...], ...}}   # a Point as a dict
      - {label: d16, params: {depth: 16, width: 8}}    # space parameters, filled by the space
    paper: {...}              # the paper's numbers for the table tool (dse.table)
    match: {...}              # a complexity-matched cell generator (dse.match)
    constraints: {flops: {max: 1.0e+7}}   # tighter budget than the space's for this study (same form)
    allow_changes: false      # resume a study with other training settings (data, recipe, thinning, seed)
    proxy:                    # overrides that apply under fidelity=proxy unless typed on the command line
      model.width_scale: 0.125              # train every point thinned to 1/8 of its channels (tables)
      data.subset: 20000

A grid study has one categorical trial parameter `cell` (the label) and one `seed`; every cell x seed is
enqueued once, so a resumed or shared study only runs what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dse import matching, yamlfile, zoo
from dse.errors import UserError
from dse.point import Point

# Objectives: accuracy or error, plus costs from dse.cost.measures (flops, params, acts; rf, the receptive
# field, is maximized: a wider view at the same cost) and the measured `latency` (dse.train.latency, ms per batch).
DIRECTIONS = {"accuracy": "maximize", "error": "minimize", "flops": "minimize", "params": "minimize",
              "acts": "minimize", "rf": "maximize", "latency": "minimize"}
BOUNDED = ("flops", "params", "acts", "rf")  # what `constraints` may bound (analytic, known before training)
SAMPLERS = ("auto", "tpe", "nsga2", "gp", "grid", "random")
PRUNERS = ("none", "median", "halving", "hyperband", "dominance", "moasha")
MOASHA = {"eta": 3, "min_rung": 1, "rung_score": "train_loss"}  # dse.trials.moasha's defaults (η, first rung
# in epochs, what ranks a rung: bench/data/search_efficiency_moasha_nds_*_loss.txt measured the choice)
RUNG_SCORES = ("train_loss", "val_acc")
# Every key with its default: the `study` config node starts from these, so `study.pruner=median` works on
# a file that does not mention pruner.
DEFAULTS = {"name": None, "space": None, "n_trials": 20, "timeout": None, "seeds": 1,
            "objectives": ["accuracy", "flops"], "sampler": "auto", "pruner": "none", "grid": None, "paper": None,
            "match": None, "description": "", "constraints": None, "proxy": None,
            "allow_changes": False, "trials_per_timeout": None, "noise_after": 3, "moasha": dict(MOASHA)}
KEYS = tuple(DEFAULTS)
# Bounds on the counts a study sets (a grid study enqueues cells x seeds trials at once), far above real studies.
MAX_TRIALS = 1_000_000  # n_trials, trials_per_timeout
MAX_SEEDS = 1000
MAX_CELLS = 10_000  # grid cells


def studies_dir() -> Path:
    """Folder of the shipped study files: dse/studies (a link to the checkout's studies/, a copy when installed)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "studies", here.parent / "studies"):
        if candidate.is_dir():
            return candidate
    return here.parent / "studies"


def names() -> list[str]:
    """Stems of the shipped study files."""
    return sorted(p.stem for p in studies_dir().glob("*.yaml"))


def read(name_or_path: str) -> dict:
    """The raw mapping of a study file, by stem or path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = studies_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(f"unknown study {name_or_path!r}; valid: {', '.join(names())}")
    data = yamlfile.read(path, "study file")
    if not isinstance(data, dict):
        raise UserError(f"study {str(path)!r}: must be a mapping of keys, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class Cell:
    """One grid cell: a label and either a Point (zoo name or dict) or a dict of space parameters."""

    label: str
    point: object = None
    params: dict | None = None


@dataclass(frozen=True)
class Study:
    """A validated study file."""

    name: str
    space: str | None = None
    n_trials: int = 20
    timeout: float | None = None
    seeds: int = 1
    objectives: tuple[str, ...] = ("accuracy", "flops")
    sampler: str = "auto"  # gp at small budgets: the search benchmark ranks it first (README)
    pruner: str = "none"
    grid: tuple[Cell, ...] = ()
    paper: dict | None = None
    match: dict | None = None
    description: str = ""
    constraints: dict | None = None
    allow_changes: bool = False
    trials_per_timeout: int | None = None
    proxy: dict | None = None  # {dotted key: value} that apply under fidelity=proxy (dse.search.proxy_overrides)
    noise_after: int = 3  # trained points before one is repeated with the next seed (dse.trials.sampling); 0: never
    moasha: dict | None = None  # {eta, min_rung, rung_score} of pruner moasha (moasha_settings)

    @property
    def directions(self) -> list[str]:
        """Optuna directions, one per objective."""
        return [DIRECTIONS[o] for o in self.objectives]

    @property
    def multi(self) -> bool:
        """True for a multi-objective study."""
        return len(self.objectives) > 1

    @property
    def is_grid(self) -> bool:
        """True when the study runs fixed cells."""
        return bool(self.grid or self.match)


def from_dict(data: dict) -> Study:
    """Validate a study mapping (already merged with overrides) into a Study."""
    data = {k: v for k, v in dict(data).items() if v is not None or k in ("timeout", "space")}
    extra = sorted(set(data) - set(KEYS))
    if extra:
        raise UserError(f"study: unknown key {extra[0]!r}; valid: {', '.join(KEYS)}")
    name = data.get("name")
    if not name or not isinstance(name, str) or "/" in name or name.startswith("."):
        raise UserError(f"study.name: needs a plain name (no '/'), got {name!r}")
    objectives = _objectives(data.get("objectives", ["accuracy", "flops"]))
    sampler = data.get("sampler", "auto")
    if sampler not in SAMPLERS:
        raise UserError(f"study.sampler: unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
    pruner = str(data.get("pruner", "none"))
    if pruner not in PRUNERS:
        raise UserError(f"study.pruner: unknown pruner {pruner!r}; valid: {', '.join(PRUNERS)}")
    if pruner not in ("none", "dominance", "moasha") and len(objectives) > 1:
        raise UserError(f"study.pruner: pruning ({pruner}) needs a single objective, got {', '.join(objectives)}")
    if pruner == "dominance" and len(objectives) < 2:
        raise UserError(f"study.pruner: dominance compares accuracy at no more cost; it needs a cost objective "
                        f"(flops, params) besides {', '.join(objectives)}")
    moasha = moasha_settings(data.get("moasha"))
    n_trials = _count("study.n_trials", data.get("n_trials", 20))
    seeds = _count("study.seeds", data.get("seeds", 1), MAX_SEEDS)
    noise_after = data.get("noise_after", 3)
    if not isinstance(noise_after, int) or isinstance(noise_after, bool) or not 0 <= noise_after <= MAX_TRIALS:
        raise UserError(f"study.noise_after: must be an integer >= 0 (trained points before one is repeated with "
                        f"another seed; 0: never), got {noise_after!r}")
    timeout = data.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0
                                or timeout != timeout):
        raise UserError(f"study.timeout: must be seconds > 0 or null, got {timeout!r}")
    cells = data.get("grid") or []
    if not isinstance(cells, list):
        raise UserError(f"study.grid: must be a list of cells ({{label, point | params}}), got {type(cells).__name__}")
    if len(cells) > MAX_CELLS:
        raise UserError(f"study.grid: {len(cells):,} cells is over the limit of {MAX_CELLS:,}")
    grid = tuple(_cell(i, c) for i, c in enumerate(cells))
    labels = [c.label for c in grid]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"study.grid: label {dup[0]!r} appears twice")
    return Study(name=name, space=data.get("space"), n_trials=n_trials, timeout=timeout, seeds=seeds,
                 objectives=objectives, sampler=sampler, pruner=pruner, grid=grid, paper=data.get("paper"),
                 match=data.get("match"), description=str(data.get("description", "")),
                 constraints=_bounds(data.get("constraints")), allow_changes=_flag(data.get("allow_changes", False)),
                 trials_per_timeout=None if data.get("trials_per_timeout") is None
                 else _count("study.trials_per_timeout", data["trials_per_timeout"]),
                 proxy=data.get("proxy"), moasha=moasha, noise_after=noise_after)


def load(name_or_path: str) -> Study:
    """Read and validate a study file by stem or path."""
    return from_dict(read(name_or_path))


def _objectives(value) -> tuple[str, ...]:
    if not isinstance(value, (str, list, tuple)):
        raise UserError(f"study.objectives: must be a list of names ({', '.join(DIRECTIONS)}), got {value!r}")
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str) or item not in DIRECTIONS:
            raise UserError(f"study.objectives: unknown objective {item!r}; valid: {', '.join(DIRECTIONS)}")
    if len(set(items)) != len(items):
        raise UserError(f"study.objectives: an objective appears twice in {items}")
    quality = [o for o in items if o in ("accuracy", "error")]
    if len(quality) != 1:
        raise UserError(f"study.objectives: need exactly one of accuracy or error, got {items}")
    return tuple(items)


def _bounds(value) -> dict | None:
    """The study's `constraints` ({flops|params|acts|rf: {min, max}}), nulls dropped."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(BOUNDED):
        extra = sorted(set(value) - set(BOUNDED)) if isinstance(value, dict) else [value]
        raise UserError(f"study.constraints: unknown key {extra[0]!r}; valid: {', '.join(BOUNDED)}")
    out = {}
    for key, bound in value.items():
        if not isinstance(bound, dict) or set(bound) - {"min", "max"}:
            raise UserError(f"study.constraints.{key}: must be {{min: …, max: …}}, got {bound!r}")
        kept = {side: v for side, v in bound.items() if v is not None}
        if kept:
            out[key] = kept
    return out or None


def moasha_settings(value) -> dict:
    """`study.moasha` ({eta: int >= 2, min_rung: epochs >= 1, rung_score: train_loss|val_acc}) with the
    defaults filled in."""
    if value is None:
        return dict(MOASHA)
    if not isinstance(value, dict):
        raise UserError(f"study.moasha: must be a mapping {{eta: 3, min_rung: 1, rung_score: train_loss}}, "
                        f"got {value!r}")
    extra = sorted(set(value) - set(MOASHA))
    if extra:
        raise UserError(f"study.moasha: unknown key {extra[0]!r}; valid: {', '.join(MOASHA)}")
    out = {**MOASHA, **value}
    for key, low in (("eta", 2), ("min_rung", 1)):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < low:
            raise UserError(f"study.moasha.{key}: must be an integer >= {low}, got {out[key]!r}")
    if out["rung_score"] not in RUNG_SCORES:
        raise UserError(f"study.moasha.rung_score: must be one of {', '.join(RUNG_SCORES)}, got {out['rung_score']!r}")
    return out


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"study.allow_changes: must be true or false, got {value!r}")
    return value


def _count(key: str, value, limit: int = MAX_TRIALS) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{key}: must be an integer >= 1, got {value!r}")
    if value > limit:
        raise UserError(f"{key}: {value:,} is over the limit of {limit:,}")
    return value


def _cell(i: int, data) -> Cell:
    if not isinstance(data, dict) or "label" not in data:
        raise UserError(f"study.grid[{i}]: needs a mapping with 'label' and 'point' or 'params'")
    extra = sorted(set(data) - {"label", "point", "params"})
    if extra:
        raise UserError(f"study.grid[{i}]: unknown key {extra[0]!r}; valid: label, point, params")
    if ("point" in data) == ("params" in data):
        raise UserError(f"study.grid[{i}] ({data['label']}): give exactly one of 'point' or 'params'")
    if "params" in data and not isinstance(data["params"], dict):
        raise UserError(f"study.grid[{i}].params: must be a mapping of space parameters")
    return Cell(label=str(data["label"]), point=data.get("point"), params=data.get("params"))


def cell_points(study: Study, space) -> dict:
    """Expand the grid (and a `match:` generator) into {label: Point}, in file order."""
    out = {}
    for cell in study.grid:
        if cell.params is not None:
            out[cell.label] = space_point(space, cell.params, cell.label)
        elif isinstance(cell.point, str):
            out[cell.label] = zoo.get(cell.point)
        else:
            out[cell.label] = Point.from_dict(cell.point)
    if study.match:
        for label, point in matching.cells(study.match).items():
            if label in out:
                raise UserError(f"study.match: label {label!r} is already a grid cell")
            out[label] = point
    return out


def space_point(space, params: dict, label: str = ""):
    """The space's Point for fixed parameter values (others at the space's defaults)."""
    if hasattr(space, "point"):
        return space.point(params)
    from optuna.trial import FixedTrial

    try:
        return space.suggest(FixedTrial(params))
    except ValueError as exc:
        raise UserError(f"study.grid ({label}): {str(exc).splitlines()[0]}") from None
