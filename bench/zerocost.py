"""Zero-cost scores on the tabular benchmark: how well they rank the trained accuracy, and whether training only
the best-scored of k random candidates (prescreening) reaches random search's front with less compute.

usage: python bench/zerocost.py [--table bench/data/resnext_tabular.csv] [--scores bench/data/resnext_zerocost.csv]
           [--seeds 20] [--k 2,4,8] [--out bench/data/zerocost.txt] [--threads 1]

1. Scores. Every point the table trained (status ok) is built at the table's geometry and seed, so at the very
   initialization the table trained it from, and scored by `dse.train.zerocost.measure` (synflow, naswot,
   grad_norm, snip on one minibatch of the table's own training split). One row per point goes to --scores,
   written as it grows; a rerun scores only the points it lacks.
2. Spearman rho of each score, and of the analytic FLOPs and params, against the table's final accuracy.
3. Replay, on the compute axis. Random search inside the budget trains the feasible points in a random order
   (a repeat costs nothing, an over-budget point is refused before training), so over enough proposals it
   trains each feasible point once and its final hypervolume is the table's own. Prescreening with score S and
   k: each step draws k candidates at random among the points not yet trained, scores those not scored before
   (their CPU seconds from --scores are charged), and trains the one with the highest S (`max`), or, since the
   search wants a front and not one best net, one at random of the candidates that no other candidate beats
   on both S and FLOPs (`front`). Compute = the table's
   cpu_seconds of each trained point plus the scoring. Hypervolume as in bench/search_efficiency.py (accuracy
   x (1 - FLOPs / budget)). FLOPs and params (free, analytic) are prescreened too, and `noise` (a random number
   per point: the null control, which the `front` rule still filters by FLOPs), as the baselines a zero-cost
   score must beat, and `oracle` (the final accuracy itself, which no search has) as the ceiling.
   For each rule: the CPU seconds to reach 95% and 100% of random search's final hypervolume, mean +- std
   over seeds.
The last line is `ratio: X` = the best zero-cost rule's mean compute to random search's final hypervolume / the
best null control's (`noise` with its best rule and k): what the scores themselves save (below 1) or cost. The
line before gives the best zero-cost rule against random search as well.
"""
from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from search_efficiency import hypervolume, load_space, read_table  # noqa: E402

ZC = ("synflow", "naswot", "grad_norm", "snip")
COLUMNS = ["point_id", "flops", "params", "val_acc", *ZC, "batch", "seconds", "cpu_seconds", "seed"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default="bench/data/resnext_tabular.csv")
    ap.add_argument("--scores", default="bench/data/resnext_zerocost.csv", help="CSV of the scores (resumable)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--k", default="2,4,8", help="candidates drawn per trained point")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads while scoring")
    ap.add_argument("--out", default=None, help="also write the report here")
    return ap.parse_args(argv)


def spearman(xs, ys) -> float:
    """Spearman's rho (scipy)."""
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def score_points(table: dict, meta: dict, path: Path, threads: int) -> dict:
    """Scores of every trained point of the table, by point id: read from `path`, the missing ones measured."""
    rows = {}
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as fh:
            rows = {r["point_id"]: r for r in csv.DictReader(fh)}
    todo = [(pid, r) for pid, r in table.items() if r["status"] == "ok" and pid not in rows]
    if todo:
        import torch

        from dse.train import datasets, zerocost

        torch.set_num_threads(threads)
        fid = meta["fidelity"]
        space = load_space(meta)
        data = datasets.load(fid["dataset"], subset=fid["subset"], val_subset=fid["val_subset"], seed=fid["seed"])
        zerocost.measure(space.point(_values(todo[0][1], space)), data, seed=fid["seed"])  # warm-up, not kept
        new = not rows
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            for pid, r in todo:
                point = space.point(_values(r, space))
                assert point.id == pid, (point.id, pid)
                m = zerocost.measure(point, data, seed=fid["seed"])
                row = {"point_id": pid, "flops": r["flops"], "params": r["params"], "val_acc": r["acc"][-1],
                       **{k: m[k] for k in ZC}, "batch": m["batch"], "seconds": m["seconds"],
                       "cpu_seconds": m["cpu_seconds"], "seed": fid["seed"]}
                writer.writerow(row)
                fh.flush()
                rows[pid] = {k: str(v) for k, v in row.items()}
                print(f"scored {pid}: {m}", flush=True)
    return {pid: {k: (float(v) if v not in ("", None) and k != "point_id" else v) for k, v in r.items()}
            for pid, r in rows.items() if pid in table}


def _values(row: dict, space) -> dict:
    return {k: int(row["values"][k]) for k in space.params}


def replay(points: list[dict], ref: float, rule: str | None, k: int, seed: int,
           front_rule: bool = False) -> list[tuple[float, float]]:
    """(cumulative compute, HV) after each trained point: random order (rule None), or of k candidates the one
    with the highest `rule`, or (front_rule) one at random of those no other candidate beats on both `rule`
    (higher) and FLOPs (lower)."""
    rng = random.Random(seed)
    if rule == "noise":  # the null control: a score that knows nothing, drawn per point and seed
        noise = random.Random(seed + 10_000)
        points = [{**p, "noise": noise.random()} for p in points]
    left, scored, front, compute, curve = list(points), set(), [], 0.0, []
    while left:
        if rule is None:
            pick = left[rng.randrange(len(left))]
        else:
            cands = rng.sample(left, min(k, len(left)))
            for c in cands:
                if rule in ZC and c["point_id"] not in scored:
                    scored.add(c["point_id"])
                    compute += c["cpu_zc"]
            if front_rule:
                kept = [c for c in cands if not any(o[rule] > c[rule] and o["flops"] < c["flops"] for o in cands)]
                pick = kept[rng.randrange(len(kept))]
            else:
                pick = max(cands, key=lambda c: c[rule])
        left.remove(pick)
        compute += pick["cpu_seconds"]
        front.append((pick["acc"], pick["flops"]))
        curve.append((compute, hypervolume(front, ref)))
    return curve


def reach(curve, target: float) -> float:
    """Compute at which the curve first reaches `target` (inf if never)."""
    return next((c for c, hv in curve if hv >= target - 1e-12), float("inf"))


def fmt(values) -> str:
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:7.0f} ± {s:5.0f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    table, meta = read_table(Path(args.table))
    space = load_space(meta)
    ref = float(space.constraints["flops"]["max"])
    zc = score_points(table, meta, Path(args.scores), args.threads)
    trained = {pid: r for pid, r in table.items() if r["status"] == "ok"}
    points = [{"point_id": pid, "acc": r["acc"][-1], "flops": r["flops"], "params": r["params"],
               "cpu_seconds": float(r["values"]["cpu_seconds"]), "oracle": r["acc"][-1],
               "cpu_zc": zc[pid]["cpu_seconds"],
               **{s: (zc[pid][s] if zc[pid][s] not in ("", None) else float("-inf")) for s in ZC}}
              for pid, r in trained.items()]
    full = hypervolume([(p["acc"], p["flops"]) for p in points], ref)
    lines = [f"zero-cost scores on {args.table}: {len(table)} points, {len(points)} trained (FLOPs <= {ref:.0e}); "
             f"scores in {args.scores}",
             f"scoring: dse.train.zerocost.measure, one minibatch of {int(zc[points[0]['point_id']]['batch'])} "
             f"training images, the table's seed ({meta['fidelity']['seed']}), {args.threads} torch thread(s)"]
    cpu = sorted(p["cpu_zc"] for p in points)
    wall = sorted(zc[p["point_id"]]["seconds"] for p in points)
    lines.append(f"time per point (build + four scores): CPU s median {statistics.median(cpu):.3f}, max {cpu[-1]:.3f}; "
                 f"wall s median {statistics.median(wall):.3f}, max {wall[-1]:.3f} (wall inflated by other load); "
                 f"a trained point's CPU s median {statistics.median(p['cpu_seconds'] for p in points):.0f}")
    for p in sorted(points, key=lambda p: p["flops"])[::max(1, len(points) // 4)]:
        lines.append(f"  {p['point_id']}: {p['flops'] / 1e6:.2f} MFLOPs, scoring {p['cpu_zc']:.3f} CPU s "
                     f"({zc[p['point_id']]['seconds']:.3f} wall), training {p['cpu_seconds']:.0f} CPU s")
    accs = [p["acc"] for p in points]
    lines += ["", f"Spearman rho against the final accuracy (n = {len(points)}), and against FLOPs:"]
    for s in (*ZC, "flops", "params"):
        vals = [p[s] for p in points]
        lines.append(f"  {s:10s} rho(acc) {spearman(vals, accs):+.3f}   rho(FLOPs) "
                     f"{spearman(vals, [p['flops'] for p in points]):+.3f}")

    ks = [int(k) for k in args.k.split(",")]
    seeds = range(args.seeds)
    base = [replay(points, ref, None, 1, s) for s in seeds]
    target = statistics.fmean(c[-1][1] for c in base)
    lines += ["", f"replay: {args.seeds} seeds; random search trains every feasible point once, final HV {target:.4f} "
              f"(the table's own: {full:.4f}); {sum(p['cpu_seconds'] for p in points):.0f} CPU s trains them all",
              f"CPU seconds to reach 95% / 100% of random search's final HV (mean ± std over seeds)",
              f"{'rule':24s} {'95%':>16s} {'100%':>16s}  scoring s"]
    results = {}

    def row(name, curves, scoring):
        r95 = [reach(c, 0.95 * target) for c in curves]
        r100 = [reach(c, target) for c in curves]
        results[name] = statistics.fmean(r100)
        lines.append(f"{name:24s} {fmt(r95):>16s} {fmt(r100):>16s}  {scoring:8.1f}")

    row("random", base, 0.0)
    for how in ("max", "front"):
        for rule in (*ZC, "flops", "params", "noise", "oracle") if how == "max" else (*ZC, "noise", "oracle"):
            for k in ks:
                curves = [replay(points, ref, rule, k, s, front_rule=how == "front") for s in seeds]
                scoring = 0.0
                if rule in ZC:  # every point is scored once by the end: the end's compute less the training
                    scoring = statistics.fmean(c[-1][0] for c in curves) - sum(p["cpu_seconds"] for p in points)
                row(f"{how} {rule} k={k}", curves, scoring)
    best = min((n for n in results if any(f" {z} " in n for z in ZC)), key=results.get)
    null = min((n for n in results if " noise " in n), key=results.get)
    lines += ["", f"to random search's final HV: best zero-cost rule {best}: {results[best]:.0f} CPU s; random search "
              f"{results['random']:.0f} s ({results[best] / results['random']:.3f} of it); the null control at its "
              f"best, {null}: {results[null]:.0f} s ({time.time() - start:.0f} s to run this)",
              "ratio = best zero-cost rule / the null control (what the scores add to the FLOPs filter; < 1: they "
              "save compute)",
              f"ratio: {results[best] / results[null]:.3f}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(f"command: python bench/zerocost.py {' '.join(argv or sys.argv[1:])}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
