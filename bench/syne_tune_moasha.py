"""Syne Tune's MOASHA and random search on dse's tabular benchmark, through Syne Tune's own simulator backend,
side by side with dse's replay (bench/search_efficiency.py --workers N).

Runs in its own environment (Syne Tune's pins are not dse's; the script imports nothing from dse):

    python3 -m venv /tmp/st && /tmp/st/bin/pip install syne-tune==0.16.0 huggingface_hub   # numpy, pandas, ...
    /tmp/st/bin/python bench/syne_tune_moasha.py [--table bench/data/resnext_tabular.csv] [--workers 4] \\
        [--seeds 10] [--horizon 1.5] [--dse bench/data/search_efficiency_moasha.txt] [--rung-score inplace|branch|loss] \\
        [--cache DIR] [--out FILE]

The blackbox (syne_tune.blackbox_repository.BlackboxTabular) is built from the table's rows within the budget
(status ok): one categorical hyperparameter `point` over their point ids, so every configuration Syne Tune
draws is inside the budget, as dse's start-up and random draws are (over-budget points cost dse nothing and
never reach a rung). Fidelity: the epoch (1..E). Objectives at each epoch: error = 1 - acc_k (minimized),
flops (minimized), and elapsed = the CPU seconds since the start of the fit (set-up + cpu_1 + ... + cpu_k),
the same curves and costs dse's replay charges. The simulator backend (UserBlackboxBackend with
SimulatorCallback) runs `--workers` asynchronous workers on a simulated clock.

Schedulers: MOASHA (metrics error and flops, time_attr epoch, max_t E, grace_period 1, reduction_factor 3:
rungs at epochs 1 and 3 of 4, as dse's moasha defaults), as shipped (NonDominatedPriority) and with its order
read as ranks (`ranked_priority`: Syne Tune 0.16 judges an arriving trial by another trial's position), and
RandomSearch (metric error: it ranks nothing; every trial runs to the end). Syne Tune 0.16 ships no NSGA-II
scheduler. All three draw configurations with replacement, so on a space of 37 points they train some points
twice and pay for it (dse never trains a point twice).

Each run lasts until the simulated clock reaches --horizon x (the CPU seconds of training every point once) /
workers. Compute: the CPU seconds of every epoch reported, summed over workers, in the order of the simulated
clock; HV: the exact 2-D hypervolume of the finished trials' (accuracy, FLOPs), reference (0, the budget's
FLOPs max), as bench/search_efficiency.py computes it. The target is read from --dse (the output of
bench/search_efficiency.py --workers N: random search's final HV there), so both sides aim at one number.

The last line is `ratio: X` = dse's best mean compute to 100% of the target (from --dse) / Syne Tune MOASHA's
(the better of the two; a seed that never reaches the target counts the compute of its whole run).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import rung_branches  # noqa: E402 - stdlib only at import time, no dse


def hypervolume(points, ref_flops: float) -> float:
    """Exact 2-D HV of (accuracy, flops) points w.r.t. (0, ref_flops), FLOPs / ref (bench/search_efficiency.py's)."""
    pts = sorted(((float(a), float(f)) for a, f in points if a > 0 and f < ref_flops), reverse=True)
    total, cheapest = 0.0, ref_flops
    for k, (acc, flops) in enumerate(pts):
        cheapest = min(cheapest, flops)
        below = pts[k + 1][0] if k + 1 < len(pts) else 0.0
        total += (acc - below) * (1.0 - cheapest / ref_flops)
    return total


def read_rows(path: Path) -> tuple[list[dict], int, float]:
    """(rows within budget with acc/cpu lists, epochs, the budget's FLOPs max) from the table and its sidecar.

    cpu: the main run's CPU seconds per epoch (the table's cpu_k minus the rung scoring run during epoch k, as
    bench/search_efficiency.py charges it); branch: {epoch k: (decay-branch acc, its CPU s)} for the rungs at the
    end of an epoch (bench/make_tabular.py --rungs)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    meta = json.loads(path.with_suffix(".json").read_text())
    epochs = int(meta["fidelity"]["epochs"])
    ref = float(meta["budget"]["flops"]["max"])
    out = []
    for r in rows:
        if r["status"] != "ok":
            continue
        num = lambda k: float(r[k]) if r.get(k) not in (None, "") else None  # noqa: E731
        branch, spent = rung_branches(r, epochs, num)  # the replay's split of cpu_k, so both sides charge alike
        cpu = [max(float(r[f"cpu_{k}"]) - spent[k - 1], 0.0) for k in range(1, epochs + 1)]
        setup = max(float(r["cpu_seconds"]) - sum(float(r[f"cpu_{k}"]) for k in range(1, epochs + 1)), 0.0)
        out.append({"id": r["point_id"], "flops": float(r["flops"]), "cpu": cpu, "setup": setup, "branch": branch,
                    "acc": [float(r[f"acc_{k}"]) for k in range(1, epochs + 1)],
                    "loss": [float(r[f"loss_{k}"]) for k in range(1, epochs + 1)]})
    return out, epochs, ref


def rung_epochs(epochs: int, grace: int = 1, eta: int = 3) -> list[int]:
    """MOASHA's rung levels below the last epoch (grace_period x eta^i), where it ranks trials."""
    out, k = [], grace
    while k < epochs:
        out.append(k)
        k *= eta
    return out


def blackbox(rows: list[dict], epochs: int, branch_at=(), loss_at=()):
    """Syne Tune's tabular blackbox of the rows: objectives error, flops, elapsed at every epoch. At the epochs
    `branch_at` the error is the decay branch's (its CPU seconds join elapsed), as dse's moasha scores a wsd rung
    with rung_score val_acc; at the epochs `loss_at` it is the epoch's mean training loss (minimized like the
    error), as dse's moasha scores a rung by default (only the rungs' ranks use it: the front reads the last
    epoch's error)."""
    import numpy as np
    import pandas as pd
    from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular
    from syne_tune.config_space import choice, randint

    values = np.zeros((len(rows), 1, epochs, 3))
    for i, r in enumerate(rows):
        elapsed = r["setup"]
        for k in range(epochs):
            elapsed += r["cpu"][k]
            acc = r["acc"][k]
            if k + 1 in branch_at:
                acc, cost = r["branch"][k + 1]
                elapsed += cost
            values[i, 0, k] = (r["loss"][k] if k + 1 in loss_at else 1.0 - acc, r["flops"], elapsed)
    # A second, constant column: Syne Tune 0.16's lookup of a one-column table fails under pandas 3
    # (a 1-tuple key on a flat index); (point, max_epochs) is a two-level index that works.
    return BlackboxTabular(hyperparameters=pd.DataFrame({"point": [r["id"] for r in rows],
                                                         "max_epochs": [epochs] * len(rows)}),
                           configuration_space={"point": choice([r["id"] for r in rows]), "max_epochs": epochs},
                           fidelity_space={"epoch": randint(1, epochs)}, objectives_evaluations=values,
                           objectives_names=["error", "flops", "elapsed"])


def ranked_priority():
    """Syne Tune's non-dominated sort as each item's rank (0: first), which its Bracket.on_result expects.

    In Syne Tune 0.16, NonDominatedPriority returns nondominated_sort's list of indices in sorted order, and
    Bracket.on_result reads that list as one priority per item: the arriving trial (the last row) is judged by
    the position of whichever index comes last in the order, not by its own rank. Example: recorded (error,
    flops) (0.5, 5), (0.4, 6), (0.6, 7) and an arriving (0.1, 1) that dominates all three: the priorities are
    [3, 1, 0, 2], its rank comes out 0.5 > 1/3, and it is stopped. This variant turns the order into ranks.
    """
    import numpy as np
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import MOPriority
    from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import nondominated_sort

    class Ranked(MOPriority):
        def priority_unsafe(self, objectives):
            order = np.asarray(nondominated_sort(X=objectives, dim=0))
            ranks = np.empty(len(order))
            ranks[order] = np.arange(len(order))
            return ranks

    return Ranked()


def run(rows: list[dict], epochs: int, kind: str, seed: int, workers: int, horizon: float, folder: str,
        rung_score: str = "inplace") -> list:
    """One simulated tuning run; the reported results [(simulated time, trial, epoch, error, flops)] in time order."""
    import numpy as np
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
    from syne_tune.optimizer.baselines import RandomSearch
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
    from syne_tune.tuner_callback import TunerCallback

    np.random.seed(seed)  # MOASHA's suggest and bracket draws use numpy's global generator
    branched = kind.startswith("moasha") and rung_score == "branch"
    ranked_by_loss = kind.startswith("moasha") and rung_score == "loss"
    bb = blackbox(rows, epochs, rung_epochs(epochs) if branched else (), rung_epochs(epochs) if ranked_by_loss else ())
    if kind.startswith("moasha"):
        scheduler = MOASHA(config_space=bb.configuration_space, metrics=["error", "flops"], do_minimize=True,
                           time_attr="epoch", max_t=epochs, grace_period=1, reduction_factor=3, random_seed=seed,
                           multiobjective_priority=ranked_priority() if kind == "moasha-ranked" else None)
    else:
        # Syne Tune's RandomSearch takes one metric (it ranks nothing); the front is computed here from both
        scheduler = RandomSearch(config_space=bb.configuration_space, metrics=["error"], do_minimize=True, random_seed=seed)
    seen = []

    class Record(TunerCallback):
        def on_trial_result(self, trial, status, result, decision):
            seen.append((float(result["st_tuner_time"]), trial.trial_id, int(result["epoch"]),
                         float(result["error"]), float(result["flops"]), float(result["elapsed"])))

    backend = UserBlackboxBackend(blackbox=bb, elapsed_time_attr="elapsed", seed=0)
    tuner = Tuner(trial_backend=backend, scheduler=scheduler, n_workers=workers, sleep_time=0,
                  stop_criterion=StoppingCriterion(max_wallclock_time=horizon), results_update_interval=1e9,
                  print_update_interval=1e9, callbacks=[SimulatorCallback(), Record()], save_tuner=False,
                  tuner_name=f"{kind}-{seed}", metadata={"seed": seed})
    tuner.run()
    return sorted(seen)


def curve(results: list, epochs: int, ref: float) -> tuple[list, list]:
    """(compute, HV) after every reported epoch: compute charges each epoch's CPU seconds (elapsed minus the
    trial's previous report; Syne Tune's checkpointed resume restarts elapsed from the paused epoch)."""
    last, compute, front, xs, ys = {}, 0.0, [], [], []
    for _, trial, epoch, error, flops, elapsed in results:
        prev_epoch, prev = last.get(trial, (0, 0.0))
        compute += elapsed - (prev if epoch > prev_epoch else 0.0)
        last[trial] = (epoch, elapsed)
        if epoch == epochs:
            front.append((1.0 - error, flops))
        xs.append(compute)
        ys.append(hypervolume(front, ref))
    return xs, ys


def reach(xs, ys, target: float):
    return next((x for x, y in zip(xs, ys) if y >= target - 1e-12), None)


def dse_numbers(path: Path) -> tuple[float, float, str]:
    """(target HV, dse's best mean compute to 100% of it, which run) from bench/search_efficiency.py's output."""
    text = path.read_text()
    target = float(re.search(r"^target: .*?: (\d\.\d+)±", text, re.M).group(1))
    best = re.search(r"^best .*?; best with moasha: (\S+) (\d+) s", text, re.M)
    plain = re.search(r"^best unpruned: (\S+) (\d+) s", text, re.M)
    runs = [(float(best.group(2)), best.group(1)), (float(plain.group(2)), plain.group(1))]
    value, name = min(runs)
    return target, value, name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default="bench/data/resnext_tabular.csv")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--horizon", type=float, default=1.5,
                    help="simulated time: this x (CPU seconds of every point once) / workers")
    ap.add_argument("--dse", default="bench/data/search_efficiency_moasha.txt",
                    help="bench/search_efficiency.py --workers N output: the target HV and dse's best compute")
    ap.add_argument("--cache", default=None, help="keep each seed's results here as JSON (resumable)")
    ap.add_argument("--rung-score", choices=("inplace", "branch", "loss"), default="inplace",
                    help="MOASHA ranks a rung by the accuracy in place, by the table's decay branch there (a "
                         "wsd table; the branch's CPU seconds are charged), or by the epoch's mean training loss, "
                         "as bench/search_efficiency.py does")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    import syne_tune

    t0 = time.time()
    rows, epochs, ref = read_rows(Path(args.table))
    target, dse_best, dse_name = dse_numbers(Path(args.dse))
    exhaustive = sum(sum(r["cpu"]) + r["setup"] for r in rows)
    horizon = args.horizon * exhaustive / args.workers
    folder = tempfile.mkdtemp(prefix="syne_tune_moasha_")
    os.environ["SYNETUNE_FOLDER"] = folder
    lines = [f"Syne Tune {syne_tune.__version__} simulator backend on {args.table}: {len(rows)} points within the "
             f"budget, {epochs} epochs, {args.workers} asynchronous workers, {args.seeds} seeds, simulated horizon "
             f"{horizon:.0f} s ({args.horizon:g} x {exhaustive:.0f} CPU s / {args.workers} workers)",
             f"MOASHA's rungs: epochs {rung_epochs(epochs)} of {epochs}, ranked by "
             + {"branch": "the table's decay-branch score there (its CPU seconds charged)",
                "loss": "the epoch's mean training loss there"}.get(args.rung_score, "the accuracy there in place"),
             f"target: {target:.4f} (random search's final HV in {args.dse}); compute: CPU seconds of the epochs "
             "reported, summed over workers; all trained points: HV "
             f"{hypervolume([(r['acc'][-1], r['flops']) for r in rows], ref):.4f}",
             "", f"{'run':<22}{'to 95% (s)':>20}{'n':>4}{'to 100% (s)':>20}{'n':>4}{'final HV':>17}{'compute':>9}"
             f"{'trials':>8}{'full':>6}"]
    means, cached = {}, 0
    for kind in ("random", "moasha", "moasha-ranked"):
        runs = []
        for seed in range(args.seeds):
            tag = f"-{args.rung_score}" if kind.startswith("moasha") and args.rung_score != "inplace" else ""
            path = (Path(args.cache) / f"st-{kind}{tag}-w{args.workers}-h{args.horizon:g}-{seed}.json"
                    if args.cache else None)
            if path is not None and path.is_file():  # resumable: a seed's reported results, kept as JSON
                res = [tuple(r) for r in json.loads(path.read_text())]
                cached += 1
            else:
                res = run(rows, epochs, kind, seed, args.workers, horizon, folder, args.rung_score)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(res))
            xs, ys = curve(res, epochs, ref)
            runs.append({"xs": xs, "ys": ys, "trials": len({r[1] for r in res}),
                         "full": sum(1 for r in res if r[2] == epochs)})
        print(f"# {kind}: {args.seeds} seeds done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        cells = ""
        for share in (0.95, 1.0):
            hit = [c for c in (reach(r["xs"], r["ys"], share * target) for r in runs) if c is not None]
            m = statistics.fmean(hit) if hit else math.nan
            sd = statistics.stdev(hit) if len(hit) > 1 else 0.0
            cells += f"{f'{m:.0f}±{sd:.0f}' if hit else '-':>20}{len(hit):>4}"
            if share == 1.0:  # a seed that never reaches the target counts its whole run: a lower bound
                censored = [reach(r["xs"], r["ys"], target) or r["xs"][-1] for r in runs]
                means[kind] = (statistics.fmean(censored), len(hit) < len(runs))
        finals = [r["ys"][-1] for r in runs]
        lines.append(f"{'syne_tune ' + kind:<22}{cells}"
                     f"{f'{statistics.fmean(finals):.4f}±{statistics.stdev(finals):.4f}':>17}"
                     f"{statistics.fmean(r['xs'][-1] for r in runs):>9.0f}"
                     f"{statistics.fmean(r['trials'] for r in runs):>8.1f}{statistics.fmean(r['full'] for r in runs):>6.1f}")
    lines += ["(to X%: compute at which a run's HV first reaches X% of the target, mean±std over the n seeds that "
              "reach it; trials: trials started (all three draw with replacement, so a point may run twice); full: trials run to the last epoch)",
              "moasha: Syne Tune's MOASHA as shipped (NonDominatedPriority); moasha-ranked: the same with its "
              "order read as ranks (ranked_priority: 0.16 judges an arriving trial by another's position)",
              "to the target, per run, for the ratio: the compute where a seed first reaches 100%; a seed that "
              "never does counts the compute of its whole run (so '>=': a lower bound, and the ratio an upper one)"]
    shown = {k: f"{'>=' if cut else ''}{m:.0f} s" for k, (m, cut) in means.items()}
    lines.append(f"dse's best: {dse_name} {dse_best:.0f} s to 100% of the target (from {args.dse}); Syne Tune "
                 f"MOASHA: {shown['moasha']} as shipped, {shown['moasha-ranked']} ranked; Syne Tune random search: "
                 f"{shown['random']}")
    peer = min(means["moasha"][0], means["moasha-ranked"][0])
    lines.append("ratio = dse's best / the better of Syne Tune's two MOASHA runs (<= 1: dse needs no more compute)")
    lines.append(f"ratio: {dse_best / peer:.3f}")
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    lines.insert(0, f"dse commit {commit}; {cached} of {3 * args.seeds} runs read from --cache (made by earlier "
                    "invocations with the same settings)")
    command = " ".join(["python bench/syne_tune_moasha.py", *(sys.argv[1:] if argv is None else argv)])
    text = "\n".join([f"command: {command}  ({time.time() - t0:.0f} s)", *lines])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
