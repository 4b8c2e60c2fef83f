"""`python -m dse.search space=<space> study=<study> data=… fidelity=… sampler=… logger=… [key=value …]`.

The main job: an Optuna study over a design space, one Lightning training per trial, results in
runs/<study.name>/. Re-running the same command resumes the study. Everything the user typed is checked
(space, study, data, sampler, logger, storage, dataset) before the study is created or touched; a mistake
prints one line `error: …` and exits 2.

Config is composed with Hydra's compose API (not @hydra.main): errors stay one line, nothing goes to
outputs/, and the run directory is ours. The groups `space` and `study` are the files in spaces/ and
studies/, registered in Hydra's ConfigStore at start-up. Only this module sees the config: `prepare` turns
it into a `Job` of typed objects once, and nothing below receives a config dict.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from dse import yamlfile
from dse.errors import UserError
from dse.space.model import CONSTRAINTS
from dse.trials.job import Job, Options

if TYPE_CHECKING:  # the typed pieces of a Job (imported where they are made: heavy imports stay lazy)
    from dse.results.wandb_log import LoggerConfig
    from dse.trials.pool import PoolConfig

GROUPS = ("space", "study", "data", "fidelity", "sampler", "logger", "launcher")
USAGE = """usage: python -m dse.search [space=NAME] [study=NAME] [data=NAME] [fidelity=NAME] [sampler=NAME] [logger=NAME]
                            [study.n_trials=N] [study.name=X] [trainer.max_epochs=N] [storage=URL] [key=value ...]
       python -m dse.search --cfg ...     print the composed config and exit
"""


def conf_dir() -> Path:
    """The packaged Hydra config folder (root config, data, fidelity, sampler, logger)."""
    return Path(__file__).resolve().parent / "conf"


def spaces_dir() -> Path:
    """Folder of the space files (dse.space.spaces_dir when it exists)."""
    from dse.space.parse import spaces_dir as finder

    return Path(finder())


def options(group: str) -> list[str]:
    """The valid names of a config group."""
    from dse.study import studies_dir

    folder = {"space": spaces_dir(), "study": studies_dir()}.get(group, conf_dir() / group)
    return sorted(p.stem for p in folder.glob("*.yaml"))


def register(files: dict | None = None) -> None:
    """Put the space and study files into Hydra's ConfigStore as groups `space` and `study`.

    `files` maps a group to a user's own file (space=path/to/my.yaml), registered under its stem.
    """
    from hydra.core.config_store import ConfigStore

    from dse.study import studies_dir

    store = ConfigStore.instance()
    for group, folder in (("space", spaces_dir()), ("study", studies_dir())):
        for path in sorted(folder.glob("*.yaml")):
            store.store(group=group, name=path.stem, node=_node(group, path))
    for group, path in (files or {}).items():
        store.store(group=group, name=path.stem, node=_node(group, path))


def own_files(overrides: list[str]) -> tuple[list[str], dict]:
    """Rewrite space=/study= overrides that name a YAML file to its stem; returns (overrides, {group: path})."""
    out, files = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key in ("space", "study") and value.endswith((".yaml", ".yml")):
            path = Path(value).expanduser()
            if not path.is_file():
                raise UserError(f"{key}: file {value!r} " + ("is not a file" if path.exists() else "does not exist"))
            files[key] = path.resolve()
            check_file(key, files[key])
            item = f"{key}={path.stem}"
        out.append(item)
    return out, files


def check_file(group: str, path: Path) -> None:
    """A user's own space or study file, checked in full before Hydra, Optuna or torch is imported (fail fast)."""
    from dse import study as studies
    from dse.space.parse import load

    if group == "space":
        load(str(path))
        return
    data = {k: v for k, v in studies.read(str(path)).items() if not (isinstance(v, str) and "${" in v)}
    studies.from_dict({**studies.DEFAULTS, **data, "name": data.get("name") or path.stem})  # ${...}: Hydra's


def _node(group: str, path: Path) -> dict:
    """The config node of one space/study file: the file's mapping (a space also gets name and file)."""
    data = yamlfile.read(path, f"{group} file") or {}
    if not isinstance(data, dict):
        raise UserError(f"{group} {path.stem!r}: must be a mapping of keys")
    if group == "space":  # the space is loaded by dse.space; its bounds may be overridden here
        given = data.get("constraints") or {}
        bounds = {k: {"min": None, "max": None, **(given.get(k) or {})} for k in CONSTRAINTS}
        return {"name": path.stem, "file": str(path), "constraints": bounds}
    from dse.study import DEFAULTS

    return {**DEFAULTS, **data}


def check_overrides(overrides: list[str], files: dict) -> None:
    """Name the group and its valid options when `group=value` picks an option that does not exist."""
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if key in files:
            continue
        if sep and key in GROUPS and value not in ("", "null") and value not in options(key):
            raise UserError(f"unknown {key} {value!r}; valid: {', '.join(options(key))}")


# Keys below these are any measure's bounds (study.constraints.acts.max=...): the study's and the space's own checks
# judge them and name the valid measures, so `+` may add them.
CHECKED_BELOW = ("study.constraints.", "space.constraints.")


def check_added(overrides: list[str]) -> None:
    """`+key=value` adds a key only where the config has a place for it (a group, or below a free-form key such
    as study.proxy); a new key elsewhere is refused like a typo, with the closest valid key. `++key=value`
    (Hydra's force-add) declares a key of the user's own on purpose."""
    for item in overrides:
        if not item.startswith("+") or item.startswith("++"):
            continue
        key = item[1:].partition("=")[0]
        if key in GROUPS or key.startswith(CHECKED_BELOW):
            continue
        keys = known_keys()
        if key in keys or any(key.startswith(k + ".") for k in keys):
            continue
        hint = close_key(key)
        raise UserError(f"unknown key {key!r}" + (f"; did you mean {hint!r}?" if hint else "; see --cfg for the keys")
                        + f" (to add a key of your own, write ++{key}=...)")


def compose(overrides: list[str]) -> dict:
    """Compose the root config with the overrides and resolve it to plain dicts."""
    overrides, files = own_files(overrides)  # the user's own files first: a bad one is refused before Hydra loads
    check_typed(overrides)
    check_overrides(overrides, files)
    check_added(overrides)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register(files)
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="dse"):
            cfg = OmegaConf.to_container(hydra_compose("config", overrides=list(overrides)), resolve=True)
            extra = proxy_overrides(cfg, overrides)
            if extra:  # the study's own proxy settings, below anything typed on the command line
                cfg = OmegaConf.to_container(hydra_compose("config", overrides=extra + list(overrides)),
                                             resolve=True)
        return cfg
    except UserError:
        raise
    except Exception as exc:  # Hydra/OmegaConf: malformed override, unknown key, bad interpolation
        raise UserError(_one_line(exc, overrides)) from None


PROXY_GROUPS = ("model", "data", "trainer")


def proxy_overrides(cfg: dict, overrides: list[str]) -> list[str]:
    """The study's `proxy:` settings as overrides, when fidelity=proxy (the default) and not typed by the user.

    A study file tunes the CPU proxy to its table (e.g. WRN Table 4 trains thinned nets on more samples):
    `proxy: {model.width_scale: 0.125, data.subset: 20000, trainer.max_epochs: 4}`.
    """
    import json

    proxy = (cfg.get("study") or {}).get("proxy") or {}
    if not isinstance(proxy, dict):
        raise UserError(f"study.proxy: must map dotted keys (model.*, data.*, trainer.*) to values, got {proxy!r}")
    fidelity = "proxy"
    typed = set()
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if key == "fidelity":
            fidelity = value
        typed.add(key)
    for key in proxy:
        if str(key).split(".")[0] not in PROXY_GROUPS or "." not in str(key):
            raise UserError(f"study.proxy: unknown key {key!r}; valid: {', '.join(g + '.<key>' for g in PROXY_GROUPS)}")
    if fidelity != "proxy":
        return []
    return [f"{key}={json.dumps(value)}" for key, value in proxy.items() if key not in typed]


def _one_line(exc: Exception, overrides: list[str]) -> str:
    """One line from a Hydra/OmegaConf error (and its cause), naming the override."""
    from hydra.errors import OverrideParseException

    def first(e) -> str:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        return (lines[0] if lines else type(e).__name__).rstrip(".")

    if isinstance(exc, OverrideParseException):
        bad = next((o for o in overrides if o in str(exc) or "=" not in o), None) or exc.override
        return f"malformed override {bad!r}: {first(exc)} (expected key=value)"
    text = first(exc).replace("Could not override", "cannot apply override")
    cause = exc.__cause__ or exc.__context__
    missing = re.search(r"Key '([^']+)' is not in struct", f"{exc} {cause}")
    if missing:
        typed = next((o.lstrip("+~").partition("=")[0] for o in overrides
                      if o.lstrip("+~").partition("=")[0].endswith(missing.group(1))), missing.group(1))
        hint = close_key(typed)
        return f"unknown key {typed!r}" + (f"; did you mean {hint!r}?" if hint else "; see --cfg for the keys")
    if cause is not None and first(cause) not in text:
        text += f": {first(cause)}"
    return text


def known_keys() -> list[str]:
    """Every dotted key of the default composed config (study.n_trials, trainer.lr, ...)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="dse"):
        cfg = OmegaConf.to_container(hydra_compose("config", overrides=["space=resnext"]), resolve=False)

    def walk(node, prefix=""):
        for key, value in node.items():
            yield from walk(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    return list(walk(cfg))


def close_key(typed: str) -> str | None:
    """The valid dotted key a mistyped one most likely meant (n_trials -> study.n_trials), or None."""
    import difflib

    keys = known_keys()
    leaf = typed.split(".")[-1]
    same_leaf = [k for k in keys if k.split(".")[-1] == leaf]
    if same_leaf:
        return same_leaf[0]
    found = difflib.get_close_matches(typed, keys, n=1, cutoff=0.6)
    return found[0] if found else None


def check_root(cfg: dict) -> None:
    """The root keys that no typed object checks: seed, workers, progress, report_every."""
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed: must be an integer >= 0, got {seed!r}")
    every = cfg.get("report_every", 5)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise UserError(f"report_every: must be an integer >= 1, got {every!r}")
    if not isinstance(cfg.get("progress", True), bool):
        raise UserError(f"progress: must be true or false, got {cfg.get('progress')!r}")
    threads = (cfg.get("trainer") or {}).get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"trainer.threads: must be an integer >= 1 (or null: torch's default), got {threads!r}")


def check_typed(overrides: list[str]) -> None:
    """run_dir=, storage= and trainer.threads= as typed on the command line, checked before Hydra loads (prepare
    checks them again as composed)."""
    typed = {k.lstrip("+~"): v for k, sep, v in (o.partition("=") for o in overrides) if sep}
    if "trainer.threads" in typed:
        try:
            threads = yaml.safe_load(typed["trainer.threads"])
        except yaml.YAMLError:  # not YAML: Hydra's grammar says what is wrong with it
            threads = None
        check_root({"trainer": {"threads": threads}})
    if typed.get("run_dir") or typed.get("storage"):
        check_paths({"run_dir": typed.get("run_dir") or ".", "storage": typed.get("storage")}, "")


def check_paths(cfg: dict, study_name: str) -> None:
    """run_dir must be a folder (or not exist yet), a SQLite or journal storage path a file: checked before any
    data, storage or torch is touched."""
    _path_kind(Path(cfg.get("run_dir") or f"runs/{study_name}"), "run_dir", folder=True)
    url = str(cfg.get("storage") or "")
    if url.startswith("journal:"):
        _path_kind(Path(url[len("journal:"):]), "storage", folder=False)
    elif url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        _path_kind(Path(url[len("sqlite:///"):].split("?")[0]), "storage", folder=False)
    elif url.startswith("grpc:"):
        from dse.storage import parse_proxy
        parse_proxy(url)  # grpc://host:port; whether a proxy answers there is known when the storage opens


def _path_kind(path: Path, what: str, folder: bool) -> None:
    """A UserError when `path` is of the wrong kind, or lies under a file."""
    if path.exists():
        if folder != path.is_dir():
            raise UserError(f"{what}: {path} is a {'file' if folder else 'folder'}; give a "
                            f"{'folder' if folder else 'file path'}")
        return
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{what}: {path} lies under {parent}, which is a file")


def prepare(cfg: dict) -> Job:
    """Validate the composed config and load space, study, data and recipe; touches no storage."""
    from dse import study as studies

    check_root(cfg)
    study_cfg = dict(cfg.get("study") or {})
    space_name = (cfg.get("space") or {}).get("name")
    if study_cfg.get("space") and space_name and study_cfg["space"] != space_name:
        raise UserError(f"space: study {study_cfg.get('name')!r} is written for space {study_cfg['space']!r}, "
                        f"got space={space_name}")
    study_cfg["space"] = study_cfg.get("space") or space_name
    study = studies.from_dict(study_cfg)
    check_paths(cfg, study.name)
    if not study.space and not study.is_grid:  # said before Optuna, the data and torch load
        asked = (cfg.get("sampler") or {}).get("name") or study.sampler
        raise UserError("sampler=grid needs a space (space=NAME)" if asked == "grid" else
                        f"space: study {study.name!r} names no space; give space=NAME "
                        f"(valid: {', '.join(options('space'))})")
    from dse.trials.sampling import SamplerConfig, auto

    sampler = dict(cfg.get("sampler") or _read_option("sampler", study.sampler))
    if sampler["name"] == "auto":
        sampler = _read_option("sampler", auto(study))
    sampler = SamplerConfig.of(sampler)
    data = load_data(cfg)
    space = load_space(cfg.get("space") or {"name": study.space}, data, study.constraints) if study.space else None
    cells = None
    if study.is_grid:
        cells = studies.cell_points(study, space)
    elif sampler.name == "grid":
        points = space.grid()  # run the first n_trials cells; a resume with a larger n_trials adds the next ones
        cells = {p.id: p for p in points[:-(-study.n_trials // study.seeds)]}
    if cells is not None and not cells:
        raise UserError(f"study {study.name!r}: the grid has no cells")
    from dse.trials import budget
    if cells is not None:
        budget.check_cells(space, cells)  # before the storage is touched
    elif not os.environ.get("DSE_WORKER"):  # the pool's parent has said it already
        budget.check_space(space)
    recipe = make_recipe(cfg, study)
    run_dir = Path(cfg.get("run_dir") or f"runs/{study.name}")
    from dse import provenance
    thin = model_thinning(cfg)
    root = Options(seed=int(cfg.get("seed", 0)), progress=cfg.get("progress", True),
                   report_every=int(cfg.get("report_every", 5)))
    settings = provenance.settings(cfg.get("data") or {}, recipe, thin, root.seed)
    return Job(study=study, space=space, cells=cells, sampler=sampler, logger=logger_config(cfg),
               pool=pool_config(cfg), options=root, data=data, recipe=recipe, run_dir=run_dir,
               storage_url=cfg.get("storage"), config_yaml=yaml.safe_dump(masked_config(cfg), sort_keys=False),
               thin=thin, settings=settings)


def logger_config(cfg: dict) -> LoggerConfig:
    """The `logger` node as a LoggerConfig (keys it does not know are left out)."""
    from dse.results.wandb_log import LoggerConfig

    node = dict(cfg.get("logger") or {"name": "none"})
    return LoggerConfig(**{f.name: node[f.name] for f in dataclasses.fields(LoggerConfig) if f.name in node})


def pool_config(cfg: dict) -> PoolConfig:
    """`workers`, `workers_per_gpu`, the GPUs per trial (trainer.devices when a number, else 1) and `progress`."""
    from dse.trials.pool import PoolConfig

    devices = (cfg.get("trainer") or {}).get("devices", 1)
    return PoolConfig(workers=cfg.get("workers", 1), per_gpu=cfg.get("workers_per_gpu", "auto"),
                      devices=devices if isinstance(devices, int) and devices > 0 else 1,
                      progress=cfg.get("progress", True))


def model_thinning(cfg: dict) -> tuple[float, int]:
    """(width_scale, min_width) from the `model` keys, checked."""
    model = dict(cfg.get("model") or {})
    extra = sorted(set(model) - {"width_scale", "min_width"})
    if extra:
        raise UserError(f"model: unknown key {extra[0]!r}; valid: width_scale, min_width")
    scale, low = model.get("width_scale", 1.0), model.get("min_width", 4)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise UserError(f"model.width_scale: must be in (0, 1], got {scale!r}")
    if isinstance(low, bool) or not isinstance(low, int) or low < 1:
        raise UserError(f"model.min_width: must be an integer >= 1, got {low!r}")
    return float(scale), low


def _read_option(group: str, name: str) -> dict:
    """A config-group file read directly (the study's default sampler when `sampler=` is not given)."""
    path = conf_dir() / group / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown {group} {name!r}; valid: {', '.join(options(group))}")
    return yamlfile.read(path, f"{group} config")


def load_space(node: dict, data, study_bounds: dict | None = None):
    """The Space of a `space` config node ({name, file, constraints}) at the data's geometry.

    A UserError if it is unknown, empty or contradictory. Bounds: the space file's, then the study's
    `constraints`, then those overridden on the command line (space.constraints.flops.max=…).
    """
    from dse.space.parse import load

    name, constraints = node["name"], node.get("constraints")
    if not node.get("file") and name not in options("space"):
        raise UserError(f"unknown space {name!r}; valid: {', '.join(options('space'))}")
    path = Path(node.get("file") or spaces_dir() / f"{name}.yaml")
    space = load(str(path)).with_geometry(image_size=int(data.image_size), in_chans=int(data.in_chans),
                                          num_classes=int(data.num_classes))
    in_file = {k: {side: v for side, v in b.items() if v is not None}
               for k, b in _node("space", path)["constraints"].items()}
    if study_bounds:
        space = space.with_constraints(**study_bounds)
    given = {k: {side: v for side, v in (b or {}).items() if v is not None} for k, b in (constraints or {}).items()}
    changed = {k: b for k, b in given.items() if b and b != in_file.get(k)}  # typed on the command line
    return space.with_constraints(**changed) if changed else space


def load_data(cfg: dict):
    """The dataset as tensors (a UserError if it is unknown or missing)."""
    from dse.train import datasets
    data_cfg = {k: v for k, v in dict(cfg.get("data") or {}).items()}
    name = data_cfg.pop("name", None)
    return datasets.load(name, **_accepted(datasets.load, data_cfg), seed=cfg.get("seed", 0))


def make_recipe(cfg: dict, study):
    """The training recipe from the `trainer` keys (fidelity + overrides) and the base seed.

    Grid studies (ablation tables) also score the test set unless trainer.eval_test says otherwise.
    """
    from dse.train import fit as train
    given = {k: v for k, v in dict(cfg.get("trainer") or {}).items() if v is not None}
    trainer = {"seed": int(cfg.get("seed", 0)), **given}
    if study.is_grid:
        trainer.setdefault("eval_test", True)
    return train.recipe(trainer)


def _accepted(fn, kwargs: dict) -> dict:
    """The subset of kwargs that `fn` takes (a data config may carry keys for other tools)."""
    import inspect

    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params and k not in ("name", "seed")}


def masked_config(cfg: dict) -> dict:
    """The config with the storage password masked, fit to save or log."""
    from dse.storage import mask

    out = dict(cfg)
    if out.get("storage"):
        out["storage"] = mask(out["storage"])
    return out


def main(argv=None) -> int:
    """Entry point: compose, validate, run; user mistakes exit 2 with one line."""
    started = time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    from dse.storage import hide_in_env

    sys.argv[1:] = hide_in_env(sys.argv[1:])  # W&B records the command line; DDP re-runs it
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + "\n" + "\n".join(f"  {g}: {', '.join(options(g))}" for g in GROUPS))
        return 0
    show = "--cfg" in argv
    argv = [a for a in argv if a != "--cfg"]
    storage_url = None
    try:
        bad = [a for a in argv if a.startswith("-")]
        if bad:
            raise UserError(f"unknown flag {bad[0]!r}; use key=value overrides (see --help)")
        cfg = compose(argv)
        if show:
            print(yaml.safe_dump(masked_config(cfg), sort_keys=False), end="")
            return 0
        _quiet()
        job = dataclasses.replace(prepare(cfg), argv=tuple(argv), started=started)
        storage_url = job.storage_url
        from dse.train import ddp
        from dse.trials import runner, slurm  # Optuna, submitit: imported once the command line and files are checked
        if ddp.is_follower():  # a DDP rank that Lightning started for rank 0's trial
            from dse.train import fit as train
            code = ddp.follow(train.fit, job.data, job.recipe)
        elif slurm.wanted(cfg.get("launcher")):  # one array job; each task runs this command with launcher=local
            code = slurm.launch(argv, job.storage_url, job.run_dir, job.study.name, cfg["launcher"])
        else:
            code = runner.run(job)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept in the storage; re-run the command to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:  # a lost gRPC proxy is one line (dse.storage.lost_line); anything else is a bug
        from dse.storage import LOST_EXIT, lost_line

        line = lost_line(exc, storage_url)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return LOST_EXIT
    return code


def _quiet() -> None:
    """Silence library chatter that would bury the progress bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*ExperimentalWarning.*")
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":
    sys.exit(main())
