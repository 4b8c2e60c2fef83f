"""Do early rungs predict the end? Spearman rho between each rung's score (its accuracy, or the epoch's mean
training loss) and the final accuracy, per schedule.

Reads two tables made by bench/make_tabular.py with the same `--rungs` and `--sample` on the same points, one
per schedule (one-cycle: rungs scored in place; wsd: on a discarded short-decay branch), keeps the points
trained ok in both, and prints (and writes to --out) the rho of every rung and epoch against the full budget's
final accuracy, a bootstrap 90% interval, the CPU share of the full budget each rung costs, and the full
budget's final accuracy and CPU seconds per schedule with their paired difference.

    python bench/rung_rho.py [--onecycle bench/data/resnext_tabular_onecycle.csv] \\
        [--wsd bench/data/resnext_tabular_wsd.csv] [--out bench/data/rung_rho.txt]
    python bench/rung_rho.py --table bench/data/nds_resnext_w3_e9_tabular_onecycle.csv --out FILE   # one table

The two tables are grown together (resumable; each call trains only the sample's points not yet in its CSV):

    for n in 5 10 15 20 25 30 34 37; do for s in onecycle wsd; do
      nice -n 10 python bench/make_tabular.py --out bench/data/resnext_tabular_$s.csv --schedule $s --sample $n \\
        --sample-seed 0 --subset 1800 --val-subset 500 --epochs 3 --batch-size 64 --threads 1 --rungs 1/9,1/3,2/3
    done; done
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr, wilcoxon

ROOT = Path(__file__).resolve().parents[1]
AIM = 0.8  # the aim: rho >= 0.8 at a third of the budget


def rows(path: Path) -> dict[str, dict]:
    with path.open(newline="") as fh:
        return {r["point_id"]: r for r in csv.DictReader(fh) if r["status"] == "ok"}


def rho(x, y) -> float:
    return float(spearmanr(x, y).statistic)


def interval(x, y, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap 90% interval of Spearman rho over points (seeded)."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, float), np.asarray(y, float)
    values = []
    for _ in range(n):
        i = rng.integers(0, len(x), len(x))
        if len(set(x[i])) > 1 and len(set(y[i])) > 1:
            values.append(rho(x[i], y[i]))
    return float(np.percentile(values, 5)), float(np.percentile(values, 95))


def rungs_of(table: dict[str, dict], meta: dict) -> list[str]:
    return list(meta.get("fidelity", {}).get("rungs") or [])


def column(table, ids, key) -> list[float]:
    return [float(table[i][key]) for i in ids]


def report(paths: dict[str, Path]) -> list[str]:
    tables = {s: rows(p) for s, p in paths.items()}
    metas = {s: json.loads(p.with_suffix(".json").read_text()) for s, p in paths.items()}
    ids = sorted(set.intersection(*(set(t) for t in tables.values())))
    if len(ids) < 3:
        return [f"only {len(ids)} points are trained ok under both schedules: nothing to rank yet"]
    fids = {s: m["fidelity"] for s, m in metas.items()}
    rungs = rungs_of(tables["onecycle"], metas["onecycle"])
    if rungs != rungs_of(tables["wsd"], metas["wsd"]):
        raise SystemExit("error: the two tables have different rungs; make them with the same --rungs")
    epochs = int(fids["onecycle"]["epochs"])
    same = {k: v for k, v in fids["onecycle"].items() if fids["wsd"].get(k) == v}
    lines = [
        "# Rungs against the end: Spearman rho between a rung's accuracy and the full budget's final accuracy",
        f"points: {len(ids)} points of {fids['onecycle'].get('space', 'resnext')} trained ok under both schedules",
        "fidelity (both): " + ", ".join(f"{k}={v}" for k, v in same.items() if k not in ("rungs",)),
        f"wsd: warmup_fraction={fids['wsd'].get('warmup_fraction')}, decay_fraction={fids['wsd'].get('decay_fraction')},"
        f" rung branch = linear decay to lr 0 over rung_decay={fids['wsd'].get('rung_decay')} x (steps so far);"
        " onecycle: rungs scored in place",
        "",
        f"{'rung':>8} {'share':>6} | {'onecycle rho [90% CI]':>24} | {'wsd rho [90% CI]':>24} | "
        f"{'cost onecycle':>13} {'cost wsd':>9}",
    ]
    finals = {s: column(t, ids, "val_acc") for s, t in tables.items()}
    full_cpu = {s: statistics.mean(column(t, ids, "cpu_seconds")) for s, t in tables.items()}
    at_third = {}
    for i, r in enumerate(rungs, 1):
        cells, costs = [], []
        for s in ("onecycle", "wsd"):
            acc = column(tables[s], ids, f"rung_acc_{i}")
            value, (lo, hi) = rho(acc, finals[s]), interval(acc, finals[s])
            if r == "1/3":
                at_third[s] = value
            cells.append(f"{value:6.3f} [{lo:6.3f}, {hi:6.3f}]")
            spent = [float(tables[s][p][f"rung_main_cpu_{i}"]) + sum(
                float(tables[s][p][f"rung_branch_cpu_{j}"]) for j in range(1, i + 1)) for p in ids]
            costs.append(statistics.mean(spent) / full_cpu[s])
        share = float(eval_fraction(r))
        lines.append(f"{r:>8} {share:6.3f} | {cells[0]:>24} | {cells[1]:>24} | {costs[0]:13.3f} {costs[1]:9.3f}")
    for k in range(1, epochs):
        cells = []
        for s in ("onecycle", "wsd"):
            acc = column(tables[s], ids, f"acc_{k}")
            value, (lo, hi) = rho(acc, finals[s]), interval(acc, finals[s])
            cells.append(f"{value:6.3f} [{lo:6.3f}, {hi:6.3f}]")
        lines.append(f"{'epoch ' + str(k):>8} {k / epochs:6.3f} | {cells[0]:>24} | {cells[1]:>24} |   (main run, "
                     "no branch)")
    loss_third = {}
    for k in range(1, epochs):
        cells = []
        for s in ("onecycle", "wsd"):
            minus = [-x for x in column(tables[s], ids, f"loss_{k}")]  # lower loss ranks higher
            value, (lo, hi) = rho(minus, finals[s]), interval(minus, finals[s])
            if 3 * k == epochs:
                loss_third[s] = value
            cells.append(f"{value:6.3f} [{lo:6.3f}, {hi:6.3f}]")
        lines.append(f"{'loss ' + str(k):>8} {k / epochs:6.3f} | {cells[0]:>24} | {cells[1]:>24} |   (main run: "
                     "minus the epoch's mean training loss, nothing extra)")
    lines += ["(share: of the main run's optimizer steps; cost: mean CPU seconds to reach and score the rung,"
              " branches so far included, over the mean full-budget CPU seconds of the same schedule;"
              " loss k: what study.moasha.rung_score=train_loss ranks a rung at epoch k by)", ""]
    diff = [w - o for w, o in zip(finals["wsd"], finals["onecycle"])]
    sd = statistics.stdev(diff)
    branch = statistics.mean(column(tables["wsd"], ids, "branch_cpu_seconds"))
    lines += ["full budget (mean over the points):"]
    for s in ("onecycle", "wsd"):
        main = statistics.mean(float(tables[s][p]["cpu_seconds"]) - float(tables[s][p]["branch_cpu_seconds"] or 0)
                               for p in ids)
        lines.append(f"  {s:>8}: final acc {statistics.mean(finals[s]):.4f} (sd over points "
                     f"{statistics.stdev(finals[s]):.4f}); CPU s {full_cpu[s]:.1f} with rung scoring, "
                     f"{main:.1f} without")
    lines.append(f"  wsd - onecycle final acc, paired: mean {statistics.mean(diff):+.4f}, sd {sd:.4f}, "
                 f"standard error {sd / len(diff) ** 0.5:.4f}; wsd branches cost {branch:.1f} CPU s per point "
                 f"({100 * branch / full_cpu['wsd']:.1f}% of its full budget)")
    better = sum(d > 0 for d in diff)
    test = wilcoxon(diff) if any(diff) else None
    lines.append(f"  median paired difference {statistics.median(diff):+.4f}; wsd higher on {better} of {len(diff)} "
                 f"points; Wilcoxon signed-rank p = {test.pvalue:.3f}" if test is not None else "  no difference")
    noise = sd / 2 ** 0.5
    lines.append(f"  seed noise bound: if the schedules differed by a constant, one run's noise sd would be "
                 f"sd(diff)/sqrt(2) = {noise:.4f}; |mean diff| = {abs(statistics.mean(diff)):.4f} is "
                 f"{'within' if abs(statistics.mean(diff)) <= noise else 'outside'} it")
    lines.append("")
    for s in ("onecycle", "wsd"):
        if s in at_third:
            met = "met" if at_third[s] >= AIM else "NOT met"
            lines.append(f"aim rho >= {AIM} at 1/3 of the budget, {s}: rho {at_third[s]:.3f}: {met}")
        if s in loss_third:
            met = "met" if loss_third[s] >= AIM else "NOT met"
            lines.append(f"aim rho >= {AIM} at 1/3 of the budget, {s}, ranked by the training loss: rho "
                         f"{loss_third[s]:.3f}: {met}")
    return lines


def epochs_report(path: Path) -> list[str]:
    """One table alone (--table, e.g. a longer budget still growing): rho of every epoch's accuracy and minus its
    mean training loss against the final accuracy, over the points trained ok so far."""
    table = rows(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    fid = meta["fidelity"]
    epochs = int(fid["epochs"])
    ids = sorted(table)
    if len(ids) < 3:
        return [f"only {len(ids)} points are trained ok in {path}: nothing to rank yet"]
    final = column(table, ids, "val_acc")
    lines = ["# Epochs against the end: Spearman rho between an epoch's score and the final accuracy, one table",
             f"points: {len(ids)} of the {meta.get('points_in_space', '?')} grid cells of {fid.get('space')} "
             f"trained ok so far (a seeded order: a random sample while the table grows)",
             "fidelity: " + ", ".join(f"{k}={v}" for k, v in fid.items()), "",
             f"{'epoch':>6} {'share':>6} | {'val acc rho [90% CI]':>24} | {'training loss rho [90% CI]':>26}"]
    for k in range(1, epochs):
        acc, minus = column(table, ids, f"acc_{k}"), [-x for x in column(table, ids, f"loss_{k}")]
        cells = []
        for x in (acc, minus):
            lo, hi = interval(x, final)
            cells.append(f"{rho(x, final):6.3f} [{lo:6.3f}, {hi:6.3f}]")
        lines.append(f"{k:>6} {k / epochs:6.3f} | {cells[0]:>24} | {cells[1]:>26}")
    cpu = statistics.mean(column(table, ids, "cpu_seconds"))
    lines += ["", f"full budget: final acc {statistics.mean(final):.4f} (sd over points {statistics.stdev(final):.4f});"
              f" CPU s {cpu:.1f} per point"]
    return lines


def eval_fraction(text: str) -> float:
    from fractions import Fraction
    return float(Fraction(text))


def provenance(paths: dict[str, Path]) -> list[str]:
    out = [""]
    for s, p in paths.items():
        meta = json.loads(p.with_suffix(".json").read_text())
        for run in meta.get("runs", []):
            m = run.get("machine", {})
            out.append(f"{s}: {run.get('command')} | {run.get('started')}..{run.get('finished', '?')} | "
                       f"trained {run.get('trained', '?')} | dse {run.get('code', {}).get('commit', '?')} | "
                       f"{m.get('cpu')} x{m.get('cpus')}, python {m.get('python')}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onecycle", default="bench/data/resnext_tabular_onecycle.csv")
    ap.add_argument("--wsd", default="bench/data/resnext_tabular_wsd.csv")
    ap.add_argument("--out", default="bench/data/rung_rho.txt")
    ap.add_argument("--table", default=None, help="one table alone: every epoch against the end (no schedules)")
    args = ap.parse_args(argv)
    paths = {"table": Path(args.table)} if args.table else {"onecycle": Path(args.onecycle), "wsd": Path(args.wsd)}
    for s, p in paths.items():
        if not p.exists():
            print(f"error: --{s} {p}: no such table; make it with bench/make_tabular.py"
                  + ("" if s == "table" else f" --schedule {s}"), file=sys.stderr)
            return 2
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *(
        sys.argv[1:] if argv is None else argv)])
    lines = (epochs_report(paths["table"]) if args.table else report(paths)) + [
        "", f"command: {command}", "tables made by (one line per sitting):"]
    lines += provenance(paths)[1:]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
