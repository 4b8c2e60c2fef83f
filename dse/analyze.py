"""Design-space analysis of finished studies, from their storages alone (no training):

    python -m dse.analyze RUN_DIR [RUN_DIR ...] [--by PARAM] [--normalize flops|params|acts|none] [--out DIR]
                          [--bins N] [--top F]

Each run dir is a group, or, with --by PARAM, each value of that trial parameter over all runs. Only trained
trials count (user attr status 'ok' with a validation accuracy); error = 1 - validation accuracy. In DIR
(default <first run dir>/analysis/) it writes:

    edf.csv, edf.png     per trained trial: group, number, error, complexity, weight, edf, edf_normalized;
                         the plain and the complexity-normalized error EDF of each group with 95% bootstrap
                         bands (the rule: dse.results.edf)
    ks.csv               pairwise KS statistics between the groups' normalized (and plain) EDFs
    trends.csv/.png      per sampled parameter value: median error, and RegNet's empirical-bootstrap estimate
                         of the minimum error (25% resamples, 10^4 times) with its 95% interval
    importance.csv/.png  Optuna's fANOVA and PED-ANOVA importances for low error (high accuracy), per study of
                         at least 10 trained trials (dse.results.analysis.MIN_IMPORTANCE; fewer: a line says so)
    zerocost.csv         per study whose trials carry zero-cost scores (dse.train.zerocost): each score's Spearman
                         rho against accuracy, with n; given from 10 trained trials with the score
                         (dse.results.analysis.MIN_ZEROCOST; fewer: its rho is left empty and a line says so)

Studies trained with different settings (data, subset, epochs, batch, seeds, ...: dse.results.made) are
compared all the same, after one `warning:` line on stderr naming the settings that differ.
    refined.yaml         for AnyNet-style studies (per-stage width and depth): the quantized-linear width rule
                         (w0, wa, wm) fitted to the best models, as a narrower space file for dse.search
                         (refine.csv: the per-model fits)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dse.results.analysis import MEASURES, Analysis, Run, analyze_runs, check_options, study_run, summary, write
from dse.errors import UserError
from dse.results import made
from dse.results.files import check_writable


def read_run(path: str, taken: set) -> Run:
    """The study of a run directory and its trained trials."""
    from dse.report import load_study, locate

    run_dir, name, storage, saved = locate([str(path)])
    label = name if name not in taken else str(run_dir)
    taken.add(label)
    return study_run(load_study(run_dir, name, storage), run_dir, label, saved.space_file)


def analyze(paths: list[str], by: str | None = None, measure: str = "flops", n_bins: int = 6,
            top: float = 0.25, reps: int = 500, refine: bool = True) -> Analysis:
    """Read the runs and compute every table (nothing written)."""
    check_options(measure, n_bins, top)
    taken: set = set()
    return analyze_runs([read_run(p, taken) for p in paths], by, measure, n_bins, top, reps, refine)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own prints the usage first)
        raise UserError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; a UserError on bad flags."""
    p = _Parser(prog="python -m dse.analyze", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--by", default=None, metavar="PARAM", help="group by this trial parameter's values")
    p.add_argument("--normalize", default="flops", choices=MEASURES, help="complexity of the normalized EDF")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <first run>/analysis)")
    p.add_argument("--bins", type=int, default=6, help="log-spaced complexity bins (default 6)")
    p.add_argument("--top", type=float, default=0.25, help="fraction of best models the refinement fits (0.25)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        out = Path(args.out) if args.out else Path(args.runs[0]) / "analysis"
        analysis = analyze(args.runs, by=args.by, measure=args.normalize, n_bins=args.bins, top=args.top)
        check_writable(out, "--out" if args.out else str(out), "" if args.out else "pass --out DIR")  # after reading
        written = write(analysis, out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    warning = made.compare({run.label: made.of_study(run.study) for run in analysis.runs if run.study is not None})
    if warning:
        print(warning, file=sys.stderr)
    for line in summary(analysis):
        print(line)
    print(f"wrote {out}/ ({', '.join(written)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
