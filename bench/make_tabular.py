"""Build a tabular benchmark: every point of a design space trained once, per-epoch validation accuracy kept.

Each grid point of the space (all choice params crossed) at the data's geometry gets one row. Points within
the study's budget (the study's `constraints` over the space's own bounds, exactly as `python -m dse.search`
applies them) are trained with the real `dse.train.fit.fit` (one-cycle SGD, the proxy recipe) on a seeded
Fashion-MNIST subset; points over budget are recorded with their exact params/FLOPs, their relative
violations and status over_budget, untrained. A replay of samplers and pruners can then look training up
instead of running it, and charge the recorded seconds as its simulated cost.

    python bench/make_tabular.py --out bench/data/resnext_tabular.csv \\
        [--space resnext] [--study default] [--subset 8000] [--val-subset 3000] [--epochs 4] [--threads 1] \\
        [--limit N] [--where depth=11,width=32] \\
        [--schedule onecycle|wsd] [--warmup-fraction 0.05] [--decay-fraction 0.2] \\
        [--rungs 1/9,1/3,2/3] [--rung-decay 0.2] [--sample N] [--sample-seed 0] [--no-warm-fit]

Output: a CSV, one row per point (columns in COLUMNS below, then acc_1..acc_E, val_loss_1..E, loss_1..E,
sec_1..sec_E, cpu_1..cpu_E), written and flushed row by row, and a sidecar `<out stem>.json` with the fidelity, the
command, the machine and the run's totals. Resumable: a rerun skips the points already in the CSV
(rows with status `failed`, i.e. an exception, are retried) and refuses to mix fidelities in one file.
`--limit N` keeps only the first N grid points (after `--where`), for smoke runs. `--no-warm-fit` skips the
unrecorded first fit that pays Lightning's one-time start-up before the first recorded point (for a process that
has already trained, as the tests' in-process runs have). `--sample N` keeps only
the first N feasible points of a seeded shuffle (`--sample-seed`; over-budget points get no rows): a larger N
later extends the same sample, and the same N and seed pick the same points under either schedule.

`--schedule wsd` trains with warmup-stable-decay (trainer.schedule=wsd: linear warm-up over
`--warmup-fraction` of the steps, constant, linear decay to 0 over the last `--decay-fraction`). `--rungs`
scores each rung (a share of all steps) with dse.train.rungs.RungScores: under wsd on a discarded branch that
decays the lr to 0 over `--rung-decay` x (steps so far) steps, under onecycle in place (the current weights).

Columns: point_id (dse's Point.id), the space's params, params and flops (dse.complexity at the data's
geometry), viol_<key>_<side> (relative violation; feasible when <= 0), status (ok | over_budget | diverged
| oom | failed), reason, epochs (completed), val_acc (last epoch), acc_k (validation accuracy after epoch
k, 0..1), val_loss_k, loss_k (mean training loss of epoch k), sec_k (wall seconds of epoch k, training
plus validation), cpu_k (process CPU seconds of the same; steadier than wall time when other work shares
the machine), train_seconds (wall seconds of the whole fit: build, Trainer set-up and all epochs),
cpu_seconds (process CPU time over the fit, rung branches included), seed. With `--rungs`, per rung i: rung_acc_i, rung_loss_i (validation
after the branch), rung_step_i (optimizer steps of the main run), rung_branch_steps_i, rung_main_cpu_i (CPU
seconds of the main run up to the rung, branches excluded), rung_branch_cpu_i (CPU seconds of the branch and
its validation: compute the rung costs on top of the main run); then steps (all main optimizer steps) and
branch_cpu_seconds (all branches).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RETRY = ("failed",)  # statuses a rerun trains again


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/data/resnext_tabular.csv", help="CSV to write (appended to, resumable)")
    ap.add_argument("--space", default="resnext", help="space name (spaces/NAME.yaml) or a YAML path")
    ap.add_argument("--study", default="default", help="study whose constraints set the budget (studies/NAME.yaml)")
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--subset", type=int, default=8000, help="training samples")
    ap.add_argument("--val-subset", type=int, default=3000, help="validation samples (from the seeded split)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs = rungs of the table")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    ap.add_argument("--schedule", default="onecycle", choices=("onecycle", "wsd"), help="lr schedule")
    ap.add_argument("--warmup-fraction", type=float, default=0.05, help="wsd: warm-up share of the steps")
    ap.add_argument("--decay-fraction", type=float, default=0.2, help="wsd: decay share of the steps")
    ap.add_argument("--rungs", default="", help="rungs as shares of the steps, e.g. 1/9,1/3,2/3")
    ap.add_argument("--rung-decay", type=float, default=0.2,
                    help="wsd rung branch length as a share of the steps so far (onecycle: rungs scored in place)")
    ap.add_argument("--sample", type=int, default=None, help="only N feasible points of a seeded shuffle")
    ap.add_argument("--sample-seed", type=int, default=0, help="seed of --sample's shuffle")
    ap.add_argument("--augment", action="store_true", help="pad-and-crop + flip (off, as in fidelity=proxy)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0, help="data split and training seed")
    ap.add_argument("--limit", type=int, default=None, help="only the first N grid points (smoke runs)")
    ap.add_argument("--where", action="append", default=[],
                    help="only points with these values, e.g. depth=29,width=64 (repeat: any of them)")
    ap.add_argument("--quiet", action="store_true", help="no per-point lines")
    ap.add_argument("--no-warm-fit", action="store_true",
                    help="skip the unrecorded warm-up fit (a process that has trained already)")
    args = ap.parse_args(argv)
    for name in ("subset", "val_subset", "epochs", "batch_size", "threads"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if args.sample is not None and args.sample <= 0:
        ap.error("--sample must be positive")
    return args


def train_recipe(args):
    """The fit's Recipe and the rungs (UserError on a bad value: checked before anything is written)."""
    from dse.train.recipe import parse_rungs, recipe

    cfg = {"recipe": "proxy", "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
           "schedule": args.schedule, "threads": args.threads, "seed": args.seed}
    if args.schedule == "wsd":
        cfg.update(warmup_fraction=args.warmup_fraction, decay_fraction=args.decay_fraction)
    rungs = parse_rungs(args.rungs) if args.rungs else ()
    if not 0.0 <= args.rung_decay <= 1.0:
        from dse.errors import UserError
        raise UserError(f"--rung-decay: must be in [0, 1] (a share of the steps so far), got {args.rung_decay}")
    return recipe(cfg), rungs


def load_space(name: str, study_name: str, geometry: dict):
    """The space at the data's geometry with the study's bounds, as dse.search.load_space builds it."""
    from dse import study as studies
    from dse.space.parse import load, spaces_dir

    path = Path(name) if name.endswith((".yaml", ".yml")) else Path(spaces_dir()) / f"{name}.yaml"
    space = load(str(path)).with_geometry(**geometry)
    study = studies.load(study_name)
    if study.constraints:
        space = space.with_constraints(**study.constraints)
    return space, study


def fidelity(args, data_geometry: dict) -> dict:
    """What must be equal for two runs to share a table."""
    return {"space": args.space, "study": args.study, "dataset": args.dataset, "subset": args.subset,
            "val_subset": args.val_subset, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "schedule": args.schedule, "recipe": "proxy", "augment": bool(args.augment), "seed": args.seed,
            **data_geometry, **extra_fidelity(args)}


def extra_fidelity(args) -> dict:
    """Keys only runs with wsd, rungs or a sample have (so older tables keep their fidelity)."""
    extra = {}
    if args.schedule == "wsd":
        extra.update(warmup_fraction=args.warmup_fraction, decay_fraction=args.decay_fraction)
    if args.rungs:
        from dse.train.recipe import parse_rungs
        extra.update(rungs=[str(r) for r in parse_rungs(args.rungs)], rung_decay=args.rung_decay)
    if args.sample is not None:
        extra["sample_seed"] = args.sample_seed  # N may grow between runs: the same shuffle's first N
    return extra


RUNG_KEYS = ("acc", "loss", "step", "branch_steps", "main_cpu", "branch_cpu")


def columns(param_names: list[str], bound_keys: list[str], epochs: int, rungs: int = 0) -> list[str]:
    per_epoch = [f"{k}_{i}" for k in ("acc", "val_loss", "loss", "sec", "cpu") for i in range(1, epochs + 1)]
    per_rung = [f"rung_{k}_{i}" for i in range(1, rungs + 1) for k in RUNG_KEYS]
    tail = ["steps", "branch_cpu_seconds"] if rungs else []
    return (["point_id", *param_names, "params", "flops", *[f"viol_{k}" for k in bound_keys], "status", "reason",
             "epochs", "val_acc", *per_epoch, *per_rung, "train_seconds", "cpu_seconds", *tail, "seed"])


def read_rows(path: Path) -> tuple[list[str] | None, list[dict]]:
    if not path.exists() or path.stat().st_size == 0:
        return None, []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return reader.fieldnames, rows


def code() -> dict:
    from dse.results.made import code as dse_code
    return dse_code()


def machine() -> dict:
    info = {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count()}
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                     None)
        info["cpu"] = model
    except OSError:
        pass
    return info


def grid(space, where: list[dict], limit: int | None) -> list[tuple[dict, object]]:
    from dse.errors import UserError

    out = []
    for values in space.grid_values():
        if where and not any(all(str(values.get(k)) == v for k, v in w.items()) for w in where):
            continue
        try:
            point = space.point(values)
        except UserError:  # a check of the space fails: not a point of it
            continue
        out.append((values, point))
    return out[:limit] if limit is not None else out


def fmt(x, digits: int = 6):
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return x


def main(argv=None) -> int:
    from dse.errors import UserError

    args = parse_args(argv)
    try:
        return build(args, argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def sample(points, feasible_ids: set, n: int | None, seed: int) -> list:
    """The first n feasible points of a seeded shuffle of all feasible points (all points when n is None)."""
    if n is None:
        return points
    import random

    pool = sorted((p for p in points if p[1].id in feasible_ids), key=lambda vp: vp[1].id)
    random.Random(seed).shuffle(pool)
    return pool[:n]


def build(args, argv) -> int:
    from dse import complexity

    recipe, rungs = train_recipe(args)

    geometry = {"image_size": 28, "in_chans": 1, "num_classes": 10} if args.dataset == "fashion_mnist" else None
    data = None
    if geometry is None:  # other datasets: their geometry comes from the data itself
        data = load_data(args)
        geometry = {"image_size": int(data.image_size), "in_chans": int(data.in_chans),
                    "num_classes": int(data.num_classes)}
    space, study = load_space(args.space, args.study, geometry)
    where = [dict(kv.split("=", 1) for kv in w.split(",") if kv) for w in args.where]
    points = grid(space, where, args.limit)
    if args.sample is not None:
        ok = {p.id for _, p in points if all(x <= 0 for x in space.violations(p).values())}
        points = sample(points, ok, args.sample, args.sample_seed)
    param_names = list(space.params)
    bound_keys = [f"{k}_{side}" for k, spec in space.specs.items() for side in ("min", "max") if spec.get(side)
                  is not None]
    cols = columns(param_names, bound_keys, args.epochs, len(rungs))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta_path = out.with_suffix(".json")
    fid = fidelity(args, geometry)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    header, rows = read_rows(out)
    if header is not None and (header != cols or meta.get("fidelity", fid) != fid):
        changed = {k: (meta.get("fidelity", {}).get(k), v) for k, v in fid.items()
                   if meta.get("fidelity", {}).get(k) != v}
        print(f"error: {out} was made with another fidelity or columns ({changed or 'columns differ'}); "
              f"use another --out", file=sys.stderr)
        return 2
    done = {r["point_id"]: r for r in rows if r["status"] not in RETRY}
    if len(done) != len(rows):  # drop rows to retry: rewrite the file without them
        rows = [r for r in rows if r["status"] not in RETRY]
        write_all(out, cols, rows)
    todo = [(v, p) for v, p in points if p.id not in done]
    counts = {p.id: complexity(p) for _, p in todo}
    viols = {p.id: space.violations(p) for _, p in todo}
    feasible = [(v, p) for v, p in todo if all(x <= 0 for x in viols[p.id].values())]
    print(f"{len(points)} points; {len(points) - len(todo)} already in {out}; {len(todo)} to do "
          f"({len(feasible)} to train, {len(todo) - len(feasible)} over budget)", flush=True)

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *(
        sys.argv[1:] if argv is None else argv)])
    runs = meta.get("runs", [])
    if not todo:
        print(f"done: nothing to do; {out}", flush=True)
        return 0
    runs.append({"command": command, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "machine": machine(), "code": code(), "to_train": len(feasible)})
    meta.update({"fidelity": fid, "budget": space.constraints, "columns": cols, "runs": runs,
                 "params": {n: list(space.params[n].values) for n in param_names},
                 "study_constraints": study.constraints, "points_in_space": len(space.grid_values())})
    write_meta(meta_path, meta)

    if feasible and data is None:
        data = load_data(args)
    if feasible:
        from dse.train import fit as train
        train.quiet()
        # Warm-up (not recorded): the first fit of a process pays Lightning's import and the allocator's start
        from dataclasses import replace

        if not args.no_warm_fit:
            train.fit(feasible[0][1], data, replace(recipe, epochs=1, limit_batches=2), progress=False)
    new_header = header is None
    fh = out.open("a", newline="")
    writer = csv.DictWriter(fh, fieldnames=cols)
    if new_header:
        writer.writeheader()
        fh.flush()
    trained, t0, cpu_total = 0, time.time(), 0.0
    try:
        for values, point in todo:
            c, viol = counts[point.id], viols[point.id]
            row = {"point_id": point.id, **{n: values[n] for n in param_names}, "params": int(c.params),
                   "flops": int(c.flops), **{f"viol_{k.replace('.', '_')}": fmt(v) for k, v in viol.items()},
                   "seed": args.seed}
            if any(x > 0 for x in viol.values()):
                row.update(status="over_budget", reason="over " + ", ".join(k for k, x in viol.items() if x > 0),
                           epochs=0)
            else:
                row.update(train_one(point, data, recipe, args.epochs, rungs, args.rung_decay))
                trained += 1
                cpu_total += float(row["cpu_seconds"] or 0)
                if not args.quiet:
                    accs = " ".join(f"{row.get(f'acc_{i}', '')}" for i in range(1, args.epochs + 1))
                    print(f"[{trained}/{len(feasible)}] {point.id} {values} {row['status']} acc {accs} "
                          f"{row['train_seconds']} s (elapsed {time.time() - t0:.0f} s)", flush=True)
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        fh.close()
        runs[-1].update(finished=datetime.now(timezone.utc).isoformat(timespec="seconds"), trained=trained,
                        wall_seconds=round(time.time() - t0, 1), cpu_seconds=round(cpu_total, 1))
        write_meta(meta_path, meta)
    print(f"done: {trained} trained in {time.time() - t0:.0f} s wall, {cpu_total:.0f} s CPU; {out}", flush=True)
    return 0


def load_data(args):
    from dse.train import datasets
    return datasets.load(args.dataset, subset=args.subset, val_subset=args.val_subset, augment=bool(args.augment),
                         seed=args.seed)


def train_one(point, data, recipe, epochs: int, rungs=(), rung_decay: float = 0.2) -> dict:
    """Fit one point; the per-epoch (and per-rung) columns of its row."""
    from dse.train import fit as train
    cpu0, wall0 = time.process_time(), time.perf_counter()
    clock = _cpu_clock()
    scores = None
    if rungs:
        from dse.train.rungs import RungScores
        scores = RungScores(rungs, decay=rung_decay if recipe.schedule == "wsd" else 0.0, seed=recipe.seed)
    try:
        result = train.fit(point, data, recipe, progress=False, callbacks=(clock,) + ((scores,) if scores else ()))
        status, reason, history = result.status, result.reason, result.history
        seconds = result.seconds
    except Exception as exc:  # noqa: BLE001 - recorded, retried by the next run
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        status, reason, history = "failed", f"{type(exc).__name__}: {msg}"[:300], []
        seconds = time.perf_counter() - wall0
    if status == "ok" and len(history) < epochs:  # stopped early (e.g. a signal): not a row of the table
        status, reason = "failed", f"stopped after {len(history)} of {epochs} epochs"
    row = {"status": status, "reason": reason, "epochs": len(history), "train_seconds": fmt(seconds, 5),
           "cpu_seconds": fmt(time.process_time() - cpu0, 5)}
    for h in history:
        i = int(h["epoch"])
        if i > epochs:
            continue
        row[f"acc_{i}"] = fmt(h.get("val/acc"))
        row[f"val_loss_{i}"] = fmt(h.get("val/loss"))
        row[f"loss_{i}"] = fmt(h.get("train/loss"))
        row[f"sec_{i}"] = fmt(h.get("seconds"), 5)
        row[f"cpu_{i}"] = fmt(clock.cpu.get(i), 5)
    row["val_acc"] = row.get(f"acc_{len(history)}", "") if history else ""
    if scores is not None:
        for i, rec in enumerate(scores.records, 1):
            row.update({f"rung_{k}_{i}": fmt(rec[k], 6 if k in ("acc", "loss") else 5) for k in RUNG_KEYS})
        row["branch_cpu_seconds"] = fmt(sum(r["branch_cpu"] for r in scores.records), 5)
        row["steps"] = getattr(scores, "total_steps", "")
        if status == "ok" and len(scores.records) < len(rungs):
            status, reason = "failed", f"{len(scores.records)} of {len(rungs)} rungs scored"
            row.update(status=status, reason=reason)
    return row


def _cpu_clock():
    """A Lightning callback: process CPU seconds per epoch (training and its validation), by epoch number."""
    import lightning.pytorch as pl

    class CpuClock(pl.Callback):
        def __init__(self):
            self.cpu, self._start = {}, 0.0

        def on_train_epoch_start(self, trainer, pl_module):
            self._start = time.process_time()

        def _lap(self, trainer):
            if not trainer.sanity_checking:
                self.cpu[trainer.current_epoch + 1] = time.process_time() - self._start

        def on_validation_epoch_end(self, trainer, pl_module):
            self._lap(trainer)

        def on_train_epoch_end(self, trainer, pl_module):
            self._lap(trainer)

    return CpuClock()


def write_all(path: Path, cols: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_meta(path: Path, meta: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1, default=str) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
