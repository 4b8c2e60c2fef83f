"""Result files of a study, rebuilt from its storage alone (no training):

    trials.csv    one row per trial: number, state, status, point id, params, FLOPs, accuracy, error, epochs,
                  train seconds, reason, then the sampled space parameters (space.*) and the Point's fields
                  flattened (point.*)
    pareto.csv    the non-dominated finished trials over the study's objectives (single-objective studies:
                  accuracy and FLOPs)
    pareto.png    accuracy vs FLOPs, the front highlighted, seeds as error bars, rejected points and the
                  budget faint (matplotlib); pareto.pdf and pareto.svg for papers, pareto.caption.txt
    pareto.html   the same, interactive (plotly; one plotly.min.js per run directory)
    report.html   one self-contained page: Pareto front, EDF, trends, importance, ablation table, learning
                  curves, sortable trials (dse.report_html; written by `python -m dse.report` only)
    best.yaml     the front's Points with their numbers; best/<rank>_<id>.yaml holds each Point alone, for
                  `python -m dse.inspect best/0_<id>.yaml`

    python -m dse.report runs/<name> [storage=URL] [--wandb-workspace]   (the W&B workspace needs a key)
    python -m dse.report study.name=<name> [run_dir=runs/<name>] [storage=URL]
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import yaml

from dse.errors import UserError

FIXED = ["number", "state", "status", "label", "seed", "point_id", "name", "params", "flops", "acts", "rf",
         "rf_stride", "latency_ms", "accuracy", "error",
         "test_acc", "epochs", "train_seconds", "reason", "width_scale", "trained_params", "trained_flops"]
SENSE = {"accuracy": -1, "error": 1, "flops": 1, "params": 1, "acts": 1, "rf": -1, "latency_ms": 1}  # +1: lower is better
COLUMNS = {"latency": "latency_ms"}  # an objective's trials.csv column, where the names differ


def flatten(value, prefix: str) -> dict:
    """Nested dicts/lists as dotted keys; lists of scalars joined with '|'."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}"))
        return out
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return {prefix: "|".join(map(str, value))}
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}.{i}"))
        return out
    return {prefix: value}


def row(trial) -> dict:
    """One trials.csv row from a FrozenTrial's attributes."""
    a = trial.user_attrs
    acc = a.get("val_acc") if a.get("status") == "ok" else None
    out = {"number": trial.number, "state": trial.state.name, "status": a.get("status", ""),
           "label": a.get("label", ""), "seed": a.get("seed"), "point_id": a.get("point_id", ""),
           "name": (a.get("point") or {}).get("name", ""), "params": a.get("params"), "flops": a.get("flops"),
           "acts": a.get("acts"), "rf": a.get("rf"), "rf_stride": a.get("rf_stride"),
           "latency_ms": a.get("latency_ms"),
           "accuracy": acc, "error": None if acc is None else 1.0 - acc,
           "val_acc_std": a.get("val_acc_std") if acc is not None else None, "seeds": a.get("seeds"),
           "test_acc": a.get("test_acc") if a.get("status") == "ok" else None, "epochs": a.get("epochs"),
           "train_seconds": a.get("train_seconds"), "reason": a.get("reason", ""),
           "width_scale": a.get("width_scale", 1.0), "trained_params": a.get("trained_params", a.get("params")),
           "trained_flops": a.get("trained_flops", a.get("flops")),
           "flops_violation": trial.constraints.get("flops.max")}
    out.update({f"space.{k}": v for k, v in trial.params.items() if k not in ("cell", "seed")})
    out.update(flatten(a.get("point") or {}, "point"))
    return out


def scored(table: list[dict]) -> list[dict]:
    """The rows of trained trials that have an accuracy (what plots and 'best' are made of)."""
    return [r for r in table if r.get("status") == "ok" and r.get("accuracy") is not None]


def rows(optuna_study) -> list[dict]:
    """All trials as rows, by number."""
    return [row(t) for t in sorted(optuna_study.get_trials(deepcopy=False), key=lambda t: t.number)]


def pareto(all_rows: list[dict], objectives) -> list[dict]:
    """Non-dominated finished rows over `objectives` (with one objective: accuracy and FLOPs), by FLOPs."""
    keys = [COLUMNS.get(o, o) for o in objectives] if len(objectives) > 1 else ["accuracy", "flops"]
    done = [r for r in all_rows if r["status"] == "ok" and all(r.get(k) is not None for k in keys)]

    def score(r):
        return [SENSE[k] * float(r[k]) for k in keys]

    front = []
    for r in done:
        s = score(r)
        dominated = any(all(o <= v for o, v in zip(score(q), s)) and score(q) != s for q in done)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r["flops"], -r["accuracy"]))


def write_csv(path: Path, table: list[dict]) -> None:
    """CSV with the fixed columns first, then every other key in first-seen order."""
    columns = list(FIXED)
    for r in table:
        columns.extend(k for k in r if k not in columns)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in table:
            writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})


def plot_png(path: Path, table: list[dict], front: list[dict], title: str) -> None:
    """pareto.png with pareto.pdf, pareto.svg and pareto.caption.txt beside it (dse.figures)."""
    from dse import figures

    figures.write_static(Path(path).parent, title.split(":")[0], table, front, title)


def plot_html(path: Path, table: list[dict], front: list[dict], title: str) -> None:
    """The same plot with plotly; the run directory shares one plotly.min.js (dse.figures)."""
    from dse import figures

    figures.write_html(Path(path), table, front, title)


def write_best(run_dir: Path, optuna_study, front: list[dict]) -> None:
    """best.yaml (the front with numbers) and best/<rank>_<id>.yaml (each Point alone)."""
    trials = {t.number: t for t in optuna_study.get_trials(deepcopy=False)}
    folder = run_dir / "best"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    entries = []
    for rank, r in enumerate(front):
        point = trials[r["number"]].user_attrs["point"]
        entries.append({"trial": r["number"], "point_id": r["point_id"], "accuracy": r["accuracy"],
                        "flops": r["flops"], "params": r["params"], "file": f"best/{rank}_{r['point_id']}.yaml",
                        "point": point})
        (folder / f"{rank}_{r['point_id']}.yaml").write_text(yaml.safe_dump(point, sort_keys=False))
    (run_dir / "best.yaml").write_text(yaml.safe_dump({"study": optuna_study.study_name, "front": entries},
                                                      sort_keys=False))


def objectives_of(optuna_study) -> list[str]:
    """The study's objective names (stored at creation; else guessed from the directions)."""
    names = optuna_study.user_attrs.get("objectives")
    if names:
        return list(names)
    return ["accuracy", "flops"][:len(optuna_study.directions)]


def write_all(optuna_study, run_dir: Path, plots: bool = True) -> dict:
    """Write every result file into run_dir; returns {'rows': …, 'front': …}."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    table = rows(optuna_study)
    front = pareto(table, objectives_of(optuna_study))
    write_csv(run_dir / "trials.csv", table)
    write_csv(run_dir / "pareto.csv", front)
    if plots:
        title = f"{optuna_study.study_name}: {len(front)} on the front of {len(scored(table))} trained trials"
        plot_png(run_dir / "pareto.png", table, front, title)
        plot_html(run_dir / "pareto.html", table, front, title)
        write_best(run_dir, optuna_study, front)
    return {"rows": table, "front": front}


def locate(argv: list[str]) -> tuple[Path, str, str | None]:
    """(run_dir, study name, storage URL) from `runs/x` or `study.name=x [run_dir=…] [storage=…]`."""
    opts, paths = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep:
            if key not in ("study.name", "run_dir", "storage"):
                raise UserError(f"unknown option {key!r}; valid: study.name, run_dir, storage (or a run directory)")
            opts[key] = value
        else:
            paths.append(arg)
    if len(paths) > 1 or not (paths or "study.name" in opts):
        raise UserError("give one run directory (runs/<name>) or study.name=<name>")
    run_dir = Path(paths[0] if paths else opts.get("run_dir") or f"runs/{opts['study.name']}")
    saved = {}
    if (run_dir / "config.yaml").is_file():
        saved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    name = opts.get("study.name") or (saved.get("study") or {}).get("name") or run_dir.name
    storage = opts.get("storage") or saved.get("storage")
    if storage and "***" in storage:
        raise UserError(f"storage: the saved URL has a masked password ({storage}); pass storage=<full URL>")
    if not storage and not (run_dir / "study.db").is_file():
        raise UserError(f"no study storage in {run_dir} (no study.db, no storage in config.yaml); "
                        "pass storage=<URL>")
    return run_dir, name, storage


def load_study(run_dir: Path, name: str, storage: str | None):
    """The stored study (a UserError when it is not there)."""
    import optuna

    from dse.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage, run_dir))
    except KeyError:
        raise UserError(f"study {name!r} is not in the storage of {run_dir}") from None


def main(argv=None) -> int:
    """Entry point: rebuild the result files of one study."""
    argv = list(sys.argv[1:] if argv is None else argv)
    workspace = "--wandb-workspace" in argv  # also save the study's W&B workspace (dse.wandb_panels)
    argv = [a for a in argv if a != "--wandb-workspace"]
    url = None
    try:
        run_dir, name, storage = locate(argv)
        study = load_study(run_dir, name, storage)
        out = write_all(study, run_dir)
        from dse import report_html

        report_html.write(run_dir, study, out["rows"], out["front"])
        if workspace:
            from dse import wandb_panels

            url = wandb_panels.save_workspace(run_dir, study, out["rows"])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = max(scored(out["rows"]), key=lambda r: r["accuracy"], default=None)
    print(f"{name}: {len(out['rows'])} trials, {len(out['front'])} on the front"
          + (f", best accuracy {100 * best['accuracy']:.2f}% ({best['flops'] / 1e6:.1f} MFLOPs)" if best else ""))
    print(f"wrote {run_dir}/trials.csv, pareto.csv, pareto.png, pareto.html, best.yaml, report.html")
    if url:
        print(f"W&B workspace: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
