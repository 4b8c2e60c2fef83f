"""`python -m dse.report`: rebuild every result file of one study from its storage alone (no training).

    python -m dse.report runs/<name> [storage=URL] [--wandb-workspace]   (the W&B workspace needs a key)
    python -m dse.report study.name=<name> [run_dir=runs/<name>] [storage=URL]

writes trials.csv, pareto.csv, pareto.png, pareto.html and best.yaml (dse.results.files, as dse.search does after
every trial) and report.html (dse.results.page).
"""
from __future__ import annotations

import sys
from pathlib import Path

from dse.errors import UserError
from dse.results.files import (FIXED, flatten, objectives_of, pareto, row, rows, scored,  # noqa: F401 (its files' names)
                         write_all, write_best)
from dse.rundir import SavedRun


def locate(argv: list[str]) -> tuple[Path, str, str | None, SavedRun]:
    """(run_dir, study name, storage URL, the run's saved config) from `runs/x` or
    `study.name=x [run_dir=…] [storage=…]`; what is not given comes from the run's config.yaml."""
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
    saved = SavedRun.read(run_dir)
    name = opts.get("study.name") or saved.study_name or run_dir.name
    storage = opts.get("storage") or saved.storage
    if storage and "***" in storage:
        raise UserError(f"storage: the saved URL has a masked password ({storage}); pass storage=<full URL>")
    if not storage and not (run_dir / "study.db").is_file():
        raise UserError(f"no study storage in {run_dir} (no study.db, no storage in config.yaml); "
                        "pass storage=<URL>")
    return run_dir, name, storage, saved


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
    workspace = "--wandb-workspace" in argv  # also save the study's W&B workspace (dse.results.wandb_panels)
    argv = [a for a in argv if a != "--wandb-workspace"]
    url = None
    try:
        run_dir, name, storage, saved = locate(argv)
        study = load_study(run_dir, name, storage)
        out = write_all(study, run_dir)
        from dse.results import page as report_html
        report_html.write(run_dir, study, out["rows"], out["front"])
        if workspace:
            from dse.results import wandb_panels
            url = wandb_panels.save_workspace(study, out["rows"], saved.wandb_entity, saved.wandb_project)
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
