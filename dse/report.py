"""`python -m dse.report`: rebuild every result file of one study from its storage alone (no training).

    python -m dse.report RUN [--out DIR] [--storage URL] [--study NAME] [--wandb-workspace]
    python -m dse.report --study NAME                    (RUN defaults to runs/NAME)

writes trials.csv, pareto.csv, pareto.png, pareto.html and best.yaml (dse.results.files, as dse.search does after
every trial) and report.html (dse.results.page) into DIR (default: RUN itself). RUN is only read, so a
read-only run directory works with --out. The older spellings `storage=URL`, `study.name=NAME` and
`run_dir=DIR` still work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dse.errors import UserError
from dse.results.files import (FIXED, check_writable, flatten, objectives_of, pareto, row, rows,  # noqa: F401
                               scored, write_all, write_best)
from dse.rundir import SavedRun

OLD_KEYS = {"study.name": "--study", "storage": "--storage", "run_dir": None}  # key=value spellings kept


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one UserError line (argparse's own prints the usage first)."""

    def error(self, message):
        raise UserError(f"{message.removeprefix('argument ')} (see python -m dse.report --help)")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = _Parser(prog="python -m dse.report", description=__doc__.split("\n")[0])
    p.add_argument("run", nargs="?", metavar="RUN", help="the run directory (runs/<name>); only read")
    p.add_argument("--out", metavar="DIR", help="where to write the files (default: RUN)")
    p.add_argument("--storage", metavar="URL", help="the study's storage (default: RUN/study.db or config.yaml's)")
    p.add_argument("--study", metavar="NAME", help="the study's name (default: config.yaml's or RUN's name)")
    p.add_argument("--wandb-workspace", action="store_true", help="also save a W&B workspace (needs a key)")
    return p


def old_spellings(argv: list[str]) -> list[str]:
    """`study.name=x storage=u run_dir=d` as the flags they stand for (a bare word stays the RUN)."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-"):
            if key not in OLD_KEYS:
                raise UserError(f"unknown option {key!r}; valid: RUN, --out, --storage, --study, --wandb-workspace "
                                "(see python -m dse.report --help)")
            out += [OLD_KEYS[key], value] if OLD_KEYS[key] else [value]
        else:
            out.append(arg)
    return out


def locate(argv: list[str]) -> tuple[Path, str, str | None, SavedRun]:
    """(run_dir, study name, storage URL, the run's saved config) from `runs/x [--study x] [--storage u]`
    (or the old `study.name=x [run_dir=…] [storage=…]`); what is not given comes from the run's config.yaml."""
    return _locate(parser().parse_args(old_spellings(argv)))


def _locate(args: argparse.Namespace) -> tuple[Path, str, str | None, SavedRun]:
    """locate() of parsed arguments."""
    if not (args.run or args.study):
        raise UserError("give one run directory (runs/<name>) or --study NAME (see python -m dse.report --help)")
    run_dir = Path(args.run or f"runs/{args.study}")
    saved = SavedRun.read(run_dir)
    name = args.study or saved.study_name or run_dir.name
    storage = args.storage or saved.storage
    if storage and "***" in storage:
        raise UserError(f"--storage: the saved URL has a masked password ({storage}); pass --storage <full URL>")
    if not storage and not (run_dir / "study.db").is_file():
        raise UserError(f"no study storage in {run_dir} (no study.db, no storage in config.yaml); "
                        "pass --storage URL")
    return run_dir, name, storage, saved


def load_study(run_dir: Path, name: str, storage: str | None):
    """The stored study (a UserError when it is not there)."""
    import optuna

    from dse.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage, run_dir, create=False))
    except KeyError:
        raise UserError(f"study {name!r} is not in the storage of {run_dir}") from None


def main(argv=None) -> int:
    """Entry point: rebuild the result files of one study."""
    argv = list(sys.argv[1:] if argv is None else argv)
    url = None
    try:
        args = parser().parse_args(old_spellings(argv))
        run_dir, name, storage, saved = _locate(args)
        out_dir = Path(args.out) if args.out else run_dir
        study = load_study(run_dir, name, storage)  # read first: nothing is written beside a run it cannot read
        check_writable(out_dir, "--out" if args.out else str(run_dir),
                       "" if args.out else "pass --out DIR to write the report elsewhere")
        out = write_all(study, out_dir)
        from dse.results import page as report_html
        report_html.write(run_dir, study, out["rows"], out["front"], out_dir)
        if args.wandb_workspace:
            from dse.results import wandb_panels
            url = wandb_panels.save_workspace(study, out["rows"], saved.wandb_entity, saved.wandb_project)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = max(scored(out["rows"]), key=lambda r: r["accuracy"], default=None)
    print(f"{name}: {len(out['rows'])} trials, {len(out['front'])} on the front"
          + (f", best accuracy {100 * best['accuracy']:.2f}% ({best['flops'] / 1e6:.1f} MFLOPs)" if best else ""))
    print(f"wrote {out_dir}/trials.csv, pareto.csv, pareto.png, pareto.html, best.yaml, report.html")
    if url:
        print(f"W&B workspace: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
