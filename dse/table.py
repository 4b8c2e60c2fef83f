"""Ablation tables: a grid study's results beside the paper's own numbers.

    python -m dse.table STUDY [--storage URL] [--runs DIR] [--out DIR]

writes DIR/table.md, table.tex and table.csv (DIR defaults to runs/<study>/; the storage is only read, so a
read-only run directory works with --out). The older spellings study=, storage=, runs= and out= still work. Per row: our params and
FLOPs (analytic, of the cell's point as declared), our test error mean ± std (n) over completed trials
in the study's storage, the paper's params and error, and the deltas. Cells without a completed trial
show as `pending`; nothing is invented. Paper numbers come from dse/data/papers.yaml (with sources),
selected by the study's `paper: {table: <key>}`.

Kendall τ (τ-b, scipy's) compares the ranking of our seed-mean errors with the paper's over the rows that
have both. With several seeds the notes also give τ per seed, and every table gives a bootstrap 95%
interval of τ that resamples seeds and rows with replacement (seeded: the same storage gives the same
interval). table.csv repeats τ and its interval on every row.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dse.errors import UserError
from dse.results.tables import (bootstrap_tau, build_rows, by_seed, kendall, paper_table, papers, render_csv,
                                render_md, render_tex, seed_taus, stored_study, trained_as)
from dse.results import made
from dse.results.files import check_writable
from dse.rundir import SavedRun


def make(study_ref: str, storage: str | None = None, runs: str = "runs", out: str | None = None) -> dict:
    """Build the table of a study and write table.md/.tex/.csv; returns {'rows', 'tau', 'n', 'interval',
    'seed_taus', 'paths'}."""
    from dse import study as studies

    study = studies.load(study_ref)
    spec = study.paper or {}
    if not isinstance(spec, dict) or "table" not in spec:
        raise UserError(f"study {study.name!r}: needs `paper: {{table: <key>}}`; keys: {', '.join(papers())}")
    table = paper_table(spec["table"])
    column = spec.get("column", table.get("metric"))
    space = _space(study)
    points = studies.cell_points(study, space)
    run_dir = Path(runs) / study.name
    stored = stored_study(study.name, storage, run_dir)
    per_seed = by_seed(stored) if stored is not None else {}
    rows = build_rows(points, table, column, per_seed)
    header = table.get("columns", {}).get(column, column)
    title = f"{study.name}: ours vs the paper — {table.get('caption', spec['table'])}"
    notes = [f"Paper: {table['paper']}. Paper column: {header}. Paper numbers: {table['source'].rstrip('.')}.",
             "Our params/FLOPs: analytic count of each cell's point as declared (paper geometry)"
             + (", params without BatchNorm affine params where the paper prints a size (its convention)."
                if table.get("params_convention") == "no_norm" else "."),
             "Our error: test error of completed trials in the study's storage, mean ± sample std over seeds (n "
             "runs); 'pending' = no completed trial."]
    if study.description:
        notes.insert(0, study.description.strip())
    trained = trained_as(stored, SavedRun.read(run_dir).trained_as)  # config.yaml: for old studies only
    if trained and per_seed:
        notes.append(trained)
    origin = made.of_study(stored) if stored is not None else None
    if origin and per_seed and made.words(origin):
        notes.append("Provenance (from the storage): " + made.words(origin))
    taus = seed_taus(rows)
    if len(taus) > 1:
        notes.append("Kendall τ per seed: " + ", ".join(f"seed {s} {t:.2f}" for s, t in taus.items()))
    target = Path(out) if out else run_dir
    check_writable(target, "--out" if out else str(target), "" if out else "pass --out DIR to write the table elsewhere")
    paths = {"md": target / "table.md", "tex": target / "table.tex", "csv": target / "table.csv"}
    interval = bootstrap_tau(rows)
    paths["md"].write_text(render_md(title, rows, notes, interval))
    paths["tex"].write_text(render_tex(title, rows, notes, interval))
    paths["csv"].write_text(render_csv(rows, interval))
    tau, n = kendall(rows)
    return {"rows": rows, "tau": tau, "n": n, "interval": interval, "paths": paths, "seed_taus": taus,
            "warning": mixed(study.name, origin)}


def mixed(name: str, origin: dict | None) -> str | None:
    """One warning line when the study's trials were trained under different settings, naming those that differ."""
    variants = [v for v in (origin or {}).get("trained_with", []) if v["settings"]]
    if len(variants) < 2:
        return None
    return (f"warning: the trials of study {name} were trained under {len(variants)} settings, differing in "
            f"{', '.join(made.differing(variants))}; the table mixes them (see its notes)")


def _space(study):
    """The study's space, loaded only when a grid cell names space parameters."""
    if not any(c.params is not None for c in study.grid):
        return None
    from dse import space

    return space.load(study.space)


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one UserError line (argparse's own prints the usage first)."""

    def error(self, message):
        raise UserError(f"{message.removeprefix('argument ')} (see python -m dse.table --help)")


KEYS = ("study", "storage", "runs", "out")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = _Parser(prog="python -m dse.table", description=__doc__.split("\n")[0])
    p.add_argument("study", nargs="?", metavar="STUDY", help="a grid study with `paper:` (studies/*.yaml or a file)")
    p.add_argument("--storage", metavar="URL", help="the study's storage (default: RUNS/<study>/study.db)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="the folder of run directories (default: runs)")
    p.add_argument("--out", metavar="DIR", help="where to write table.md/.tex/.csv (default: RUNS/<study>)")
    return p


def parse_args(argv: list[str]) -> dict:
    """STUDY and --flags, or the older key=value spellings (study=, storage=, runs=, out=)."""
    flags = []
    for item in argv:
        key, eq, value = item.partition("=")
        key = key.lstrip("+")
        if eq and not item.startswith("-"):
            if key not in KEYS:
                raise UserError(f"unknown argument {item!r}; valid: STUDY, --storage, --runs, --out "
                                "(or study=, storage=, runs=, out=)")
            flags += [value] if key == "study" else [f"--{key}", value]
        else:
            flags.append(item)
    args = parser().parse_args(flags)
    if not args.study:
        from dse import study as studies

        raise UserError(f"study: missing; e.g. python -m dse.table wrn_table4; valid: {', '.join(studies.names())}")
    return {k: v for k, v in vars(args).items() if v is not None}


def main(argv=None) -> int:
    """CLI entry point."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        result = make(args["study"], args.get("storage"), args.get("runs", "runs"), args.get("out"))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["paths"]["md"].read_text())
    if result["warning"]:
        print(result["warning"], file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in result["paths"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
