"""A run's typed configuration: the `Job` that dse.search makes once from its config, and the root
`Options`. Everything below dse.search reads these, never a config dict."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the modules that define these import torch, Lightning or Optuna
    from dse.point import Point
    from dse.results.wandb_log import LoggerConfig
    from dse.space.model import Space
    from dse.study import Study
    from dse.train.datasets import Data
    from dse.train.fit import Recipe
    from dse.train.imagenet import Streamed
    from dse.trials.pool import PoolConfig
    from dse.trials.sampling import SamplerConfig


@dataclass(frozen=True)
class Options:
    """The root keys that no other typed object holds (checked by check_root)."""

    seed: int = 0  # base seed: sampler, data split, training
    progress: bool = True  # the study's bar and Lightning's per-trial bar
    report_every: int = 5  # rewrite pareto.png/html and best.yaml every N trials


@dataclass(frozen=True)
class Job:
    """Everything a run needs, validated: typed objects, no Hydra and no config dict below dse.search."""

    study: Study
    space: Space | None  # None for a grid of fixed points
    cells: dict[str, Point] | None  # {label: Point} of a grid
    sampler: SamplerConfig
    logger: LoggerConfig
    pool: PoolConfig
    options: Options
    data: Data | Streamed
    recipe: Recipe
    run_dir: Path
    storage_url: str | None
    config_yaml: str  # the resolved config, storage password masked: the run directory's config.yaml
    thin: tuple[float, int] = (1.0, 4)  # (model.width_scale, model.min_width)
    settings: dict | None = None  # what trials are trained with (dse.provenance), recorded per trial
    argv: tuple[str, ...] = ()  # the command's overrides (a worker pool starts its workers with them)
    started: float = 0.0  # time.monotonic() when the command started: study.timeout counts from here
