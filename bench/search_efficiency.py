"""How fast each sampler finds the accuracy/FLOPs front, and how much compute the dominance pruner saves,
replayed on a tabular benchmark (every point of a space trained once, bench/make_tabular.py).

usage: python bench/search_efficiency.py [--table bench/data/resnext_tabular.csv] [--trials 150] [--seeds 10]
           [--samplers random,tpe,nsga2,gp] [--pruned tpe,random] [--eps E] [--min-trials K]
           [--warmup W] [--out FILE]
       python bench/search_efficiency.py --workers 4 [--trials 25] [--long 300] [--samplers ...] [--moasha ...]
           [--pruned ...] [--eta 3] [--min-rung 1] [--rung-score inplace|branch|loss|oracle] [--cache DIR]
           (asynchronous workers: replay_async, async_report)
       python bench/search_efficiency.py --make-synthetic FILE [--epochs 4]   (a fake table, same format)

Each run is a real Optuna study (in-memory storage, objectives accuracy max / FLOPs min, the table's budget
as constraints) driven by dse's own trial function (`dse.trials.objective.Objective`) and samplers
(`dse.trials.objective.make_sampler` with dse/conf/sampler/<name>.yaml, wrapped in `dse.trials.sampling.FeasibleStart` as
`python -m dse.search` wraps it: start-up trials drawn inside the budget, `random` is random search inside
the budget, and a repeated proposal is followed by a random feasible point): only `Objective.train` is
replaced, by a look-up of the point's row. So over-budget points are rejected without training, repeated points are not
trained again, and under the dominance pruner every epoch runs `dse.trials.dominance.check` on the study's
storage, exactly as in `python -m dse.search`. The x-axes:
- proposals: Optuna trials (every sampled point, also the rejected and repeated ones, which cost nothing);
- simulated compute: the table's recorded training seconds of every point actually trained: CPU seconds
  (`cpu_seconds`, per epoch `cpu_k`) where the table has them, since wall seconds on a shared machine are
  inflated by other load (bench/data/README.md), else wall (`train_seconds`, `sec_k`); a pruned trial pays
  its set-up (the whole fit minus the sum of its epochs) plus the epochs up to its pruning rung.
Hypervolume (HV, exact in 2-D): the area dominated by the trained points' (accuracy, FLOPs) front, with
reference point accuracy 0 and FLOPs = the budget's max, FLOPs scaled by that max, so HV is in [0, 1]
(1: a net with 100% accuracy at zero FLOPs). The table's own best (all feasible points trained) is printed.

With --workers N the replay runs on a simulated clock instead (replay_async): N workers, each trained point
epoch by epoch, samplers asked while other trials run; every sampler runs without a pruner, with moasha
(dse.trials.moasha: pause at a rung, resume from the checkpoint when promoted) and with dominance, for --long
proposals; the target is random search's final HV after --trials proposals with the same workers. Its last line
is `ratio: X` = the best moasha run's mean compute to that HV / the best unpruned sampler's (the bar: <= 0.5).

Without --workers, the last line is `ratio: X`: the fraction of simulated compute that TPE with the dominance pruner saves to
reach the final HV of TPE without it (mean curves over seeds; the pruned runs get 2x the proposals so
they can get there; if pruning lost a front point and they end lower, both are compared at that lower
level, and the line before says so). X < 0 means the pruner costs compute.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLERS = ("random", "tpe", "nsga2", "gp")
AT = (10, 25, 50, 100, 150)  # proposals at which HV is printed
SHARES = (0.1, 0.25, 0.5, 1.0)  # fractions of the exhaustive compute at which HV is printed
# A run whose sampler proposes the same already-held point this many times in a row is stuck (a duplicate is
# a FAIL trial in dse, which a model-based sampler ignores; dse.trials.sampling answers each repeat with a random
# feasible point, so this guard should no longer fire): it ends there and the rest of its proposals count
# as changing nothing (which is what dse would get, only slower).
STUCK = 10


# ----- hypervolume -----

def hypervolume(points, ref_flops: float) -> float:
    """Exact 2-D HV of (accuracy, flops) points (accuracy up, FLOPs down) w.r.t. (0, ref_flops), FLOPs / ref.

    Sort by accuracy, highest first; each step down in accuracy adds a strip as wide as the cheapest FLOPs
    seen so far allows: sum_k (a_k - a_{k+1}) * (1 - min_{j<=k} f_j / ref), with a_{K+1} = 0. Points at or
    beyond the reference (acc <= 0 or FLOPs >= ref) add nothing.
    """
    pts = sorted(((float(a), float(f)) for a, f in points if a > 0 and f < ref_flops), reverse=True)
    total, cheapest = 0.0, ref_flops
    for k, (acc, flops) in enumerate(pts):
        cheapest = min(cheapest, flops)
        below = pts[k + 1][0] if k + 1 < len(pts) else 0.0
        total += (acc - below) * (1.0 - cheapest / ref_flops)
    return total


# ----- the table -----

def read_table(path: Path) -> tuple[dict, dict]:
    """(rows by point_id with numbers parsed, sidecar metadata)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    epochs = int(meta.get("fidelity", {}).get("epochs") or max(
        int(k.split("_")[1]) for k in rows[0] if k.startswith("acc_")))
    cpu = "cpu_1" in rows[0] and "cpu_seconds" in rows[0]  # CPU time: not inflated by other load (see README)
    per_epoch, whole = ("cpu", "cpu_seconds") if cpu else ("sec", "train_seconds")
    table = {}
    for r in rows:
        num = lambda k: float(r[k]) if r.get(k) not in (None, "") else None  # noqa: E731
        sec = [num(f"{per_epoch}_{k}") for k in range(1, epochs + 1)]
        branch, spent = rung_branches(r, epochs, num) if cpu else ({}, [0.0] * epochs)
        table[r["point_id"]] = {
            "status": r["status"], "params": int(r["params"]), "flops": int(r["flops"]),
            "acc": [num(f"acc_{k}") for k in range(1, epochs + 1)],
            "sec": [None if x is None else max(x - b, 0.0) for x, b in zip(sec, spent)],
            "branch": branch, "train_seconds": max((num(whole) or 0.0) - sum(spent), 0.0), "values": r}
    return table, {**meta, "epochs": epochs, "cost": f"{whole} ({per_epoch}_k per epoch)"}


def rung_branches(r: dict, epochs: int, num) -> tuple[dict, list]:
    """A row's rung scores (bench/make_tabular.py --rungs): ({epoch k: (branch acc, branch CPU s)} for the rungs
    that fall on the end of epoch k, [CPU s of the rung scoring run during epoch k]).

    The table's cpu_k include every rung scoring run during epoch k (a decay branch under wsd, an extra
    evaluation in place under one-cycle), which a search that never scores those rungs does not pay: the
    replay charges the main run (cpu_k minus those seconds) and adds a branch's seconds only where it uses the
    branch's score (--rung-score branch)."""
    steps = num("steps")
    branch, spent = {}, [0.0] * epochs
    if not steps:
        return branch, spent
    per = steps / epochs
    j = 1
    while f"rung_step_{j}" in r and r[f"rung_step_{j}"] not in ("", None):
        step, acc, cost = num(f"rung_step_{j}"), num(f"rung_acc_{j}"), num(f"rung_branch_cpu_{j}") or 0.0
        k = min(max(math.ceil(step / per - 1e-9), 1), epochs)
        spent[k - 1] += cost
        if abs(step - k * per) < 1 and acc is not None:
            branch[k] = (acc, cost)
        j += 1
    return branch, spent


def load_space(meta: dict):
    """The table's space at its geometry with its budget (as bench/make_tabular.py and dse.search build it)."""
    from dse import study as studies
    from dse.space.parse import load, spaces_dir

    fid = meta.get("fidelity", {})
    name = fid.get("space", "resnext")
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else Path(spaces_dir()) / f"{name}.yaml"
    space = load(str(path)).with_geometry(image_size=int(fid.get("image_size", 28)),
                                          in_chans=int(fid.get("in_chans", 1)),
                                          num_classes=int(fid.get("num_classes", 10)))
    constraints = studies.load(fid.get("study", "default")).constraints
    return space.with_constraints(**constraints) if constraints else space


def make_synthetic(path: Path, epochs: int = 4, seed: int = 0) -> None:
    """A fake table in make_tabular's format over resnext at Fashion-MNIST geometry: accuracy rises with
    log FLOPs plus noise, curves cross between epochs, seconds grow with FLOPs. Only for tests."""
    import random

    from dse import complexity

    rng = random.Random(seed)
    meta = {"fidelity": {"space": "resnext", "study": "default", "dataset": "synthetic", "epochs": epochs,
                         "image_size": 28, "in_chans": 1, "num_classes": 10}}
    space = load_space(meta)
    names = list(space.params)
    cols = (["point_id", *names, "params", "flops", "status", "epochs", "val_acc"]
            + [f"{k}_{i}" for k in ("acc", "sec") for i in range(1, epochs + 1)] + ["train_seconds"])
    rows = []
    for values in space.grid_values():
        point = space.point(values)
        c = complexity(point)
        row = {"point_id": point.id, **values, "params": int(c.params), "flops": int(c.flops)}
        if any(v > 0 for v in space.violations(point).values()):
            row.update(status="over_budget", epochs=0)
        else:
            final = min(0.95, 0.55 + 0.05 * math.log(c.flops / 1e5) + rng.gauss(0, 0.02))
            accs = [final * (1 - 0.6 ** (k + 1)) + rng.gauss(0, 0.03) for k in range(epochs)]
            secs = [1.0 + c.flops / 2e5 * rng.uniform(0.8, 1.2) for _ in range(epochs)]
            row.update(status="ok", epochs=epochs, val_acc=f"{accs[-1]:.6g}", train_seconds=f"{sum(secs) + 3:.5g}",
                       **{f"acc_{k + 1}": f"{a:.6g}" for k, a in enumerate(accs)},
                       **{f"sec_{k + 1}": f"{s:.5g}" for k, s in enumerate(secs)})
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


# ----- one replayed study -----

def sampler_for(name: str, seed: int, space):
    """dse's sampler for dse/conf/sampler/<name>.yaml, wrapped as `python -m dse.search` wraps it
    (dse.trials.sampling.FeasibleStart: start-up trials inside the budget, a random feasible point after a repeat)."""
    import yaml

    from dse.trials.objective import make_sampler
    from dse.trials.sampling import FeasibleStart, SamplerConfig, startup_count

    conf = ROOT / "dse" / "conf" / "sampler" / f"{name}.yaml"
    cfg = SamplerConfig.of(yaml.safe_load(conf.read_text()) if conf.is_file() else {"name": name})
    return FeasibleStart(make_sampler(cfg, seed, multi=True), space, startup_count(cfg), seed), ""


def replay(table: dict, space, meta: dict, sampler: str, seed: int, proposals: int, pruner=None) -> dict:
    """One study of `proposals` trials (`pruner`: a DominancePruner, or None for none); per proposal:
    cumulative compute, HV, trained count; and the notes."""
    import optuna

    from dse import study as studies

    from dse.trials import dominance
    from dse.trials import objective as obj
    from dse.train.fit import TrainResult

    epochs = meta["epochs"]
    ref = float(space.constraints["flops"]["max"])
    state = {"compute": 0.0, "front": [], "trained": 0, "pruned": 0, "missing": 0}

    class Replay(obj.Objective):
        """dse's trial function; training looked up in the table (and pruned by dse.trials.dominance.check)."""

        def train(self, trial, point, seed, params, flops, *args, **kwargs):
            row = table.get(point.id)
            if row is None:  # a table still being made: the point counts as a proposal that cost nothing
                state["missing"] += 1
                raise obj.TrialFailed(f"point {point.id} is not in the table yet")
            if row["status"] == "over_budget":
                raise RuntimeError(f"point {point.id} is feasible for dse but over budget in the table")
            state["trained"] += 1
            if row["status"] != "ok":
                state["compute"] += row["train_seconds"]
                return TrainResult(None, None, 0, row["train_seconds"], row["status"], row["status"])
            secs = [s or 0.0 for s in row["sec"]]
            setup = max(row["train_seconds"] - sum(secs), 0.0)
            history = []
            for k in range(1, epochs + 1):
                history.append({"epoch": k, "val/acc": row["acc"][k - 1], "seconds": secs[k - 1]})
                if self.prune:
                    reason = dominance.check(trial, k, row["acc"][k - 1], pruner.eps, pruner.min_trials, epochs,
                                             pruner.warmup)
                    if reason:
                        cost = setup + sum(secs[:k])
                        state["compute"] += cost
                        state["pruned"] += 1
                        return TrainResult(row["acc"][k - 1], None, k, cost, "pruned", reason, history=history)
            state["compute"] += row["train_seconds"]
            state["front"].append((row["acc"][-1], row["flops"]))
            return TrainResult(row["acc"][-1], None, epochs, row["train_seconds"], "ok", "", history=history)

    prune = pruner is not None
    smp, note = sampler_for(sampler, seed, space)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=smp,
                                pruner=pruner if prune else optuna.pruners.NopPruner())
    study.set_user_attr("objectives", ["accuracy", "flops"])
    spec = studies.from_dict({"name": "bench", "objectives": ["accuracy", "flops"],
                              "pruner": "dominance" if prune else "none"})
    data = types.SimpleNamespace(image_size=space.geometry["image_size"], in_chans=space.geometry["in_chans"],
                                 num_classes=space.geometry["num_classes"])
    loggers = types.SimpleNamespace(trial=lambda *a, **k: None, trial_done=lambda *a, **k: None)
    objective = Replay(study=spec, space=space, cells=None, data=data, recipe=types.SimpleNamespace(seed=0),
                       loggers=loggers, prune=prune, progress=False)
    curve = {"compute": [], "hv": [], "trained": []}
    streak = {"point": None, "n": 0, "stuck_at": None}

    def after(optuna_study, trial):
        curve["compute"].append(state["compute"])
        curve["hv"].append(hypervolume(state["front"], ref))
        curve["trained"].append(state["trained"])
        same = trial.user_attrs.get("status") == "duplicate" and trial.user_attrs.get("point_id") == streak["point"]
        streak.update(point=trial.user_attrs.get("point_id"), n=streak["n"] + 1 if same else 1)
        if streak["n"] >= STUCK and trial.user_attrs.get("status") == "duplicate":
            streak["stuck_at"] = len(curve["hv"])
            optuna_study.stop()

    study.optimize(objective, n_trials=proposals, callbacks=[after], catch=(obj.TrialFailed,))
    for values in curve.values():  # a stuck run: the rest of its proposals change nothing
        values.extend([values[-1]] * (proposals - len(values)))
    return {**curve, "pruned": state["pruned"], "missing": state["missing"], "note": note,
            "stuck_at": streak["stuck_at"]}


# ----- asynchronous workers on a simulated clock: no pruner, dominance, or moasha -----

def replay_async(table: dict, space, meta: dict, sampler: str, seed: int, proposals: int, workers: int,
                 pruner=None, rung_score: str = "inplace") -> dict:
    """One study of at most `proposals` proposals run by `workers` asynchronous workers on a simulated clock.

    Every trained point runs epoch by epoch; an epoch ends `cpu_k` simulated seconds after it starts (epoch 1
    also pays the fit's set-up), and events are handled in time order, so a sampler asked for a new point sees
    the trials still running as RUNNING (as `workers=N` does). `pruner`: None; a DominancePruner
    (dse.trials.dominance.check at every epoch, on the study's storage); or a dict {eta, min_rung}: moasha
    (dse.trials.moasha), where a trial reaching a rung goes on if it is in the top floor(n/eta) there, else it
    pauses (told PRUNED, as a paused trial would be) and frees its worker; a free worker first resumes the paused
    trial moasha names (from its checkpoint: only the epochs after the rung are charged), else proposes. A
    resumed trial that finishes is added to the study as a COMPLETE copy of the paused one (what re-queuing it
    would give), so model-based samplers learn its final accuracy. Returns the curve at every event (compute:
    CPU seconds charged so far over all workers; hv of the finished trials; time: the simulated clock) and counts.
    `rung_score` (see rung_value) "branch": moasha ranks a trial at a rung by the table's decay-branch score
    there (wsd, as dse.trials.pruning.MoashaCallback scores it), and the branch's CPU seconds are charged with
    that epoch; "loss": by the mean training loss of the epoch that ends at the rung (nothing extra to pay);
    "oracle": by the final accuracy (no search can know it: the bound on what any rung score could save).
    """
    import heapq

    import optuna
    from optuna.trial import TrialState

    from dse import study as studies
    from dse.record import TrialRecord
    from dse.train.fit import TrainResult
    from dse.trials import dominance, moasha
    from dse.trials import objective as obj

    epochs = meta["epochs"]
    ref = float(space.constraints["flops"]["max"])
    kind = "none" if pruner is None else "moasha" if isinstance(pruner, dict) else "dominance"
    ladder = moasha.rungs(epochs, pruner["min_rung"], pruner["eta"]) if kind == "moasha" else []
    branched = kind == "moasha" and rung_score == "branch"
    if branched and any(k not in r["branch"] for r in table.values() if r["status"] == "ok" for k in ladder
                        if k < epochs):
        raise SystemExit(f"error: --rung-score branch: the table has no rung branch score at the end of epochs "
                         f"{[k for k in ladder if k < epochs]} for every point (bench/make_tabular.py --rungs)")
    counts = {"proposals": 0, "trained": 0, "finished": 0, "pruned": 0, "paused": 0, "resumed": 0, "missing": 0,
              "epochs": 0}

    class Lookup(obj.Objective):
        """dse's trial function; the fit is looked up in the table and run later on the simulated clock."""

        def train(self, trial, point, seed, params, flops, *args, **kwargs):
            row = table.get(point.id)
            if row is None:
                counts["missing"] += 1
                raise obj.TrialFailed(f"point {point.id} is not in the table yet")
            if row["status"] == "over_budget":
                raise RuntimeError(f"point {point.id} is feasible for dse but over budget in the table")
            if row["status"] != "ok":
                return TrainResult(None, None, 0, row["train_seconds"], row["status"], row["status"])
            return TrainResult(row["acc"][-1], None, epochs, row["train_seconds"], "ok", "")

    smp, _ = sampler_for(sampler, seed, space)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=smp)
    study.set_user_attr("objectives", ["accuracy", "flops"])
    spec = studies.from_dict({"name": "bench", "objectives": ["accuracy", "flops"], "pruner": "none"})
    data = types.SimpleNamespace(image_size=space.geometry["image_size"], in_chans=space.geometry["in_chans"],
                                 num_classes=space.geometry["num_classes"])
    loggers = types.SimpleNamespace(trial=lambda *a, **k: None, trial_done=lambda *a, **k: None)
    objective = Lookup(study=spec, space=space, cells=None, data=data, recipe=types.SimpleNamespace(seed=0),
                       loggers=loggers, prune=False, progress=False)
    clock: list = []  # (end time, sequence, worker, trial number, epoch, seconds)
    jobs: dict = {}  # trial number -> {trial, row, values, epoch, told}
    records: list = []  # moasha.Record of every rung reached
    points: list = []  # the point ids trained, in order
    promoted: set = set()
    done: set = set()
    front: list = []
    curve = {"compute": [0.0], "hv": [0.0], "time": [0.0]}
    compute = [0.0]

    def log(t: float) -> None:
        curve["compute"].append(compute[0])
        curve["hv"].append(hypervolume(front, ref))
        curve["time"].append(t)

    def run_epoch(worker: int, t: float, job: dict) -> None:
        k = job["epoch"] + 1
        row = job["row"]
        secs = row["sec"][k - 1] or 0.0
        if branched and k in ladder and k < epochs:
            secs += row["branch"][k][1]
        if k == 1:
            secs += max(row["train_seconds"] - sum(x or 0.0 for x in row["sec"]), 0.0)
        heapq.heappush(clock, (t + secs, next(sequence), worker, job["number"], k, secs))

    def finish_paused(job: dict) -> None:
        """A resumed trial ends: its COMPLETE copy joins the study (the paused original stays PRUNED)."""
        old = study._storage.get_trial(job["trial"]._trial_id)
        attrs = {k: v for k, v in old.system_attrs.items() if k.startswith("constraints:")}
        study.add_trial(optuna.trial.create_trial(
            params=old.params, distributions=old.distributions, values=job["values"],
            user_attrs={**old.user_attrs, "status": "ok", "resumed_from": old.number}, system_attrs=attrs))

    def start(worker: int, t: float) -> None:
        if kind == "moasha":
            rec = moasha.next_promotion(records, ladder, promoted, pruner["eta"], done)
            if rec is not None:
                promoted.add((rec.trial, rec.rung))
                counts["resumed"] += 1
                run_epoch(worker, t, jobs[rec.trial])
                return
        while counts["proposals"] < proposals:
            trial = study.ask()
            counts["proposals"] += 1
            try:
                values = objective(trial)
            except obj.TrialFailed:
                study.tell(trial, state=TrialState.FAIL)
                continue
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                continue
            status = TrialRecord.from_trial(study._storage.get_trial(trial._trial_id)).status
            if status != "ok":  # over budget: COMPLETE at once, never trained
                study.tell(trial, values)
                continue
            counts["trained"] += 1
            job = {"trial": trial, "number": trial.number, "row": table[trial.user_attrs["point_id"]],
                   "values": values, "epoch": 0, "told": False}
            jobs[trial.number] = job
            points.append(job["trial"].user_attrs["point_id"])
            run_epoch(worker, t, job)
            return

    import itertools

    sequence = itertools.count()
    for w in range(workers):
        start(w, 0.0)
    while clock:
        t, _, worker, number, k, secs = heapq.heappop(clock)
        job = jobs[number]
        job["epoch"] = k
        compute[0] += secs
        counts["epochs"] += 1
        acc = job["row"]["acc"][k - 1]
        if k == epochs:
            if job["told"]:
                finish_paused(job)
            else:
                study.tell(job["trial"], job["values"])
            front.append((acc, job["row"]["flops"]))
            counts["finished"] += 1
            done.add(number)
            log(t)
            start(worker, t)
            continue
        if kind == "dominance" and dominance.check(job["trial"], k, acc, pruner.eps, pruner.min_trials, epochs,
                                                   pruner.warmup):
            study.tell(job["trial"], state=TrialState.PRUNED)
            counts["pruned"] += 1
            done.add(number)
            log(t)
            start(worker, t)
            continue
        if kind == "moasha" and k in ladder:
            score = rung_value(job["row"], k, rung_score, branched)
            records.append(moasha.record(number, k, score, job["row"]["flops"]))
            if not moasha.goes_on(records, number, k, pruner["eta"]):
                if not job["told"]:
                    study.tell(job["trial"], state=TrialState.PRUNED)
                    job["told"] = True
                counts["paused"] += 1
                log(t)
                start(worker, t)
                continue
            promoted.add((number, k))
        log(t)
        run_epoch(worker, t, job)
    curve["hv_final"] = curve["hv"][-1]
    return {**curve, **counts, "stopped": sum(1 for n in jobs if n not in done), "points": points}


RANKED = {"inplace": "ranked by the accuracy at the rung in place",
          "branch": "ranked by the table's decay-branch score at the rung (its CPU seconds charged)",
          "loss": "ranked by the mean training loss of the epoch that ends at the rung",
          "oracle": "ranked by the final accuracy (an oracle: the bound on any rung score, not a method)"}


def rung_value(row: dict, k: int, rung_score: str, branched: bool) -> float:
    """What moasha ranks a trial by at the rung at the end of epoch k (higher is better): the accuracy there
    in place, the decay branch's accuracy (branched), minus the epoch's mean training loss ("loss": the
    table's loss_k), or the final accuracy ("oracle")."""
    if branched:
        return row["branch"][k][0]
    if rung_score == "loss":
        return -float(row["values"][f"loss_{k}"])
    if rung_score == "oracle":
        return row["acc"][-1]
    return row["acc"][k - 1]


def reach(run: dict, target: float):
    """The compute (CPU seconds over all workers) at which a run's HV first reaches `target`, or None."""
    return first_reaching(run["compute"], run["hv"], target)


def async_report(table: dict, meta: dict, space, results: dict, reference: list, args, source: str) -> list[str]:
    """The lines of the asynchronous comparison; the last is `ratio: X` (best moasha compute to random's final
    HV / best unpruned sampler's, means over seeds)."""
    ref = float(space.constraints["flops"]["max"])
    ok = [r for r in table.values() if r["status"] == "ok"]
    feasible = [r for r in table.values() if r["status"] != "over_budget"]
    best = hypervolume([(r["acc"][-1], r["flops"]) for r in ok], ref)
    exhaustive = sum(r["train_seconds"] for r in feasible)
    final, final_sd = mean_std(r["hv_final"] for r in reference)
    ladder = ", ".join(map(str, args.ladder)) or "none"
    lines = [f"search efficiency with {args.workers} asynchronous workers on {source}: {len(table)} points, "
             f"{len(feasible)} within budget (FLOPs <= {ref:.3g}), {meta['epochs']} epochs; {args.seeds} seeds",
             f"HV as above (all {len(ok)} trained points: HV {best:.4f}); compute: CPU seconds of the epochs run, "
             f"summed over workers (the table's cpu_k; training every feasible point once: {exhaustive:.0f} s)",
             f"target: random search's final HV with {args.trials} proposals (no pruner, same workers): "
             f"{final:.4f}±{final_sd:.4f} over {len(reference)} seeds; every run below gets {args.long} proposals"
             f"{f' ({args.long_note})' if args.long_note else ''}",
             f"moasha: eta {args.eta}, min_rung {args.min_rung}: rungs at epochs {ladder} of {meta['epochs']}, "
             + RANKED[args.rung_score]
             + "; dominance: dse.trials.dominance's defaults",
             "", f"{'run':<18}{'to 95% (s)':>20}{'n':>4}{'to 100% (s)':>20}{'n':>4}{'final HV':>17}"
             f"{'compute':>9}{'trained':>8}{'full':>6}{'pauses':>7}{'resumed':>8}{'pruned':>7}"]
    means = {}
    for name, runs in results.items():
        cells = ""
        for share in (0.95, 1.0):
            hit = [c for c in (reach(r, share * final) for r in runs) if c is not None]
            m, sd = mean_std(hit) if hit else (math.nan, math.nan)
            cells += f"{f'{m:.0f}±{sd:.0f}' if hit else '-':>20}{len(hit):>4}"
            if share == 1.0:
                means[name] = (m if len(hit) == len(runs) else math.nan, len(hit))
        avg = lambda key: statistics.fmean(r[key] for r in runs)  # noqa: E731
        lines.append(f"{name:<18}{cells}{fmt_ms(*mean_std(r['hv_final'] for r in runs)):>17}"
                     f"{statistics.fmean(r['compute'][-1] for r in runs):>9.0f}"
                     f"{avg('trained'):>8.1f}{avg('finished'):>6.1f}{avg('paused'):>7.1f}{avg('resumed'):>8.1f}"
                     f"{avg('pruned'):>7.1f}")
    lines += ["(to X%: compute at which a run's HV first reaches X% of the target, mean±std over the n seeds that "
              "reach it within its proposals; compute: at the end of the run; full: trials trained to the last "
              "epoch; pauses: a trial paused at a rung (once per rung); resumed: paused trials promoted later)"]
    same = [f"{k} as random+{k.split('+')[1]}" for k in results if "+" in k and not k.startswith("random+")
            and f"random+{k.split('+')[1]}" in results
            and all(a["compute"] == b["compute"] for a, b in zip(results[k], results[f"random+{k.split('+')[1]}"]))]
    if same:
        lines.append(f"note: {', '.join(same)} ran exactly alike in every seed: dse.trials.sampling.FeasibleStart "
                     "counts finished (COMPLETE) and RUNNING trials as started, not paused or pruned (PRUNED) ones, "
                     "so with a pruner that stops most trials the start-up draws (random inside the budget) never end "
                     "on this table (docs/moasha.md, item 7)")
    plain = {k: v for k, v in means.items() if "+" not in k}
    pruned = {k: v for k, v in means.items() if k.endswith("+moasha")}
    best_plain = min(plain.items(), key=lambda kv: (math.isnan(kv[1][0]), kv[1][0]), default=None)
    best_moasha = min(pruned.items(), key=lambda kv: (math.isnan(kv[1][0]), kv[1][0]), default=None)
    for name in [k for k in means if k.endswith("+dominance")]:
        base = name.split("+")[0]
        if base in means and not math.isnan(means[base][0]) and not math.isnan(means[name][0]):
            saved = 1 - means[name][0] / means[base][0]
            lines.append(f"dominance with {base}: {100 * saved:.1f}% of the compute to the target saved"
                         f"{'' if saved > 0 else ' (it costs compute)'}")
        else:
            lines.append(f"dominance with {base}: reaches the target in {means[name][1]} of {args.seeds} seeds "
                         "(it prunes points of the final front), so it saves nothing at this target")
    if not best_plain or not best_moasha or math.isnan(best_plain[1][0]) or math.isnan(best_moasha[1][0]):
        lines += ["bar (moasha <= 50% of the best unpruned sampler): cannot say, a run did not reach the target in "
                  "every seed", "ratio: nan"]
        return lines
    ratio = best_moasha[1][0] / best_plain[1][0]
    lines += [f"best unpruned: {best_plain[0]} {best_plain[1][0]:.0f} s; best with moasha: {best_moasha[0]} "
              f"{best_moasha[1][0]:.0f} s (mean compute to 100% of the target, every seed reaching it)",
              f"bar (moasha <= 50% of the best unpruned sampler): {'met' if ratio <= 0.5 else 'not met'}",
              f"ratio: {ratio:.3f}"]
    return lines


def run_async(args, table: dict, meta: dict, space, path: Path, t0: float) -> list[str]:
    """--workers N: every sampler without a pruner, with moasha and (--pruned) with dominance, on the simulated
    clock; the reference is random search with --trials proposals."""
    from dse import study as studies
    from dse.errors import UserError
    from dse.trials import dominance, moasha

    try:
        settings = studies.moasha_settings({"eta": args.eta, "min_rung": args.min_rung})
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    args.ladder = moasha.rungs(meta["epochs"], settings["min_rung"], settings["eta"])
    args.long = args.long or 2 * args.trials
    longer = {k: int(v) for k, v in (item.split("=") for item in args.long_for)}  # e.g. gp=60: GP refits per ask
    args.long_note = ", ".join(f"{k} {v}" for k, v in longer.items())
    samplers = [s for s in args.samplers.split(",") if s]
    with_moasha = [s for s in args.moasha.split(",") if s and s != "none"]
    with_dominance = [s for s in args.pruned.split(",") if s and s != "none"]
    made = {"now": 0, "cached": 0}

    def runs(base: str, proposals: int, pruner, name: str) -> list[dict]:
        """Every seed's run, each read from --cache when there (resumable) and written there when made."""
        out = []
        for seed in [*range(args.first_seed, args.seeds), *range(args.first_seed)]:
            path = Path(args.cache) / f"{name}-{proposals}-{seed}.json" if args.cache else None
            if path is not None and path.is_file():
                out.append(json.loads(path.read_text()))
                made["cached"] += 1
                continue
            made["now"] += 1
            out.append(replay_async(table, space, meta, base, seed, proposals, args.workers, pruner,
                                    args.rung_score))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(out[-1]))
        return out[args.seeds - args.first_seed:] + out[: args.seeds - args.first_seed]  # in seed order

    reference = runs("random", args.trials, None, f"w{args.workers}-random")
    print(f"# reference (random, {args.trials} proposals) done ({time.time() - t0:.0f} s)", file=sys.stderr,
          flush=True)
    results = {}
    todo = ([(s, None) for s in samplers] + [(s, settings) for s in with_moasha]
            + [(s, dominance.DominancePruner()) for s in with_dominance])
    for base, pruner in todo:
        name = base if pruner is None else f"{base}+{'moasha' if isinstance(pruner, dict) else 'dominance'}"
        tag = f"-eta{args.eta}-min{args.min_rung}" if isinstance(pruner, dict) else ""
        tag += f"-{args.rung_score}" if isinstance(pruner, dict) and args.rung_score != "inplace" else ""
        results[name] = runs(base, longer.get(base, args.long), pruner, f"w{args.workers}-{name}{tag}")
        print(f"# {name}: {args.seeds} seeds done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return [f"dse commit {commit.stdout.strip() or 'unknown'}; {made['now']} runs made now, {made['cached']} read from "
            f"--cache (made by earlier invocations of this command with the same settings)",
            *async_report(table, meta, space, results, reference, args, str(path))]


# ----- summaries -----

def dominance_rungs(pruner, epochs: int) -> str:
    """The epochs at which the pruner may stop a fit of `epochs` epochs, e.g. '2-3' (or 'none')."""
    from dse.trials.dominance import first_rung

    lo, hi = first_rung(epochs, pruner.warmup), epochs - 1
    return "none" if lo > hi else str(lo) if lo == hi else f"{lo}-{hi}"


def hv_at_compute(run: dict, c: float) -> float:
    """A run's HV once it has spent at most `c` simulated seconds (its final HV after its last trial)."""
    import bisect

    i = bisect.bisect_right(run["compute"], c)
    return run["hv"][i - 1] if i else 0.0


def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def first_reaching(xs, ys, target: float):
    """The first x whose y reaches `target` (with a 1e-12 tolerance), or None."""
    return next((x for x, y in zip(xs, ys) if y >= target - 1e-12), None)


def mean_curve_vs_compute(runs: list[dict], grid: list[float]) -> list[float]:
    return [statistics.fmean(hv_at_compute(r, c) for r in runs) for c in grid]


def fmt_ms(m: float, s: float) -> str:
    return f"{m:.4f}±{s:.4f}"


def report(table: dict, meta: dict, space, results: dict, args, source: str) -> list[str]:
    """The printed lines; the last is `ratio: X`."""
    ref = float(space.constraints["flops"]["max"])
    ok = [r for r in table.values() if r["status"] == "ok"]
    feasible = [r for r in table.values() if r["status"] != "over_budget"]
    best = hypervolume([(r["acc"][-1], r["flops"]) for r in ok], ref)
    exhaustive = sum(r["train_seconds"] for r in feasible)
    lines = [f"search efficiency on {source}: {len(table)} points, {len(feasible)} within budget "
             f"(FLOPs <= {ref:.3g}), {meta['epochs']} epochs; {args.trials} proposals x {args.seeds} seeds",
             f"HV: accuracy x (1 - FLOPs/{ref:.3g}) dominated by the trained front, reference point (accuracy 0, "
             f"FLOPs {ref:.3g}); all {len(ok)} trained points: HV {best:.4f}",
             f"simulated compute: the table's {meta.get('cost', 'training seconds')} of the points trained "
             f"(a pruned one: set-up + its epochs); all of them: {exhaustive:.0f} s"]
    pruner = results.get("_pruner")
    if pruner:
        lines.append(f"dominance pruner: eps {pruner.eps:g}, min_trials {pruner.min_trials}, warmup "
                     f"{pruner.warmup:g} (prunes at epochs {dominance_rungs(pruner, meta['epochs'])}; dse.trials.dominance's "
                     "defaults unless --eps/--min-trials/--warmup)")
    runs_all = [r for runs in results.values() if isinstance(runs, list) for r in runs]
    notes = sorted({r["note"] for r in runs_all if r["note"]})
    missing = sum(r["missing"] for r in runs_all)
    for name, runs in results.items():
        at = [r["stuck_at"] for r in runs if r.get("stuck_at")] if isinstance(runs, list) else []
        if at and not name.endswith("+long"):
            notes.append(f"{name}: {len(at)} of {len(runs)} runs got stuck proposing one already-trained point "
                         f"{STUCK} times in a row (after {min(at)}-{max(at)} proposals; held flat from there)")
    if missing:
        notes.append(f"the table is incomplete: {missing} proposals (all runs) hit a point without a row and "
                     "counted as free failures")
    lines += [f"note: {n}" for n in notes]
    at = [n for n in AT if n <= args.trials] or [args.trials]
    head = f"{'sampler':<16}" + "".join(f"{f'HV@{n}':>16}" for n in at) + f"{'trained':>10}{'pruned':>8}" \
        f"{'compute s':>12}"
    lines += ["", "HV after N proposals (mean±std over seeds); trained, pruned, compute: per run at "
              f"{args.trials} proposals", head]
    configs = [k for k in results if not k.startswith("_") and not k.endswith("+long")]
    for name in configs:
        runs = results[name]
        cells = "".join(f"{fmt_ms(*mean_std(r['hv'][n - 1] for r in runs)):>16}" for n in at)
        lines.append(f"{name:<16}{cells}{statistics.fmean(r['trained'][-1] for r in runs):>10.1f}"
                     f"{statistics.fmean(r['pruned'] for r in runs):>8.1f}"
                     f"{statistics.fmean(r['compute'][-1] for r in runs):>12.0f}")
    lines += ["", "HV at simulated compute, as a share of training every feasible point once (mean±std)",
              f"{'sampler':<16}" + "".join(f"{f'{int(100 * s)}% ({s * exhaustive:.0f} s)':>22}" for s in SHARES)]
    for name in configs:
        runs = results[name]
        lines.append(f"{name:<16}" + "".join(
            f"{fmt_ms(*mean_std(hv_at_compute(r, s * exhaustive) for r in runs)):>22}" for s in SHARES))
    base = "random" if "random" in results else configs[0]
    k = min(100, args.trials)
    target = statistics.fmean(r["hv"][k - 1] for r in results[base])
    lines += ["", f"proposals to reach {base}'s {k}-proposal HV ({target:.4f}), on the mean curve over seeds:"]
    for name in configs:
        runs = results[name]
        mean = [statistics.fmean(r["hv"][i] for r in runs) for i in range(args.trials)]
        n = first_reaching(range(1, args.trials + 1), mean, target)
        lines.append(f"  {name:<16}{n if n is not None else f'not within {args.trials}':>18}")
    lines += ["", *ratio_lines(results, exhaustive)]
    return lines


def ratio_lines(results: dict, exhaustive: float) -> list[str]:
    """The pruner's saving at equal final HV for every sampler run with and without it, ending in
    `ratio: X` for TPE (else the first such sampler).

    Equal HV: the final HV of the runs without the pruner (mean over seeds), or the pruned runs' own final HV
    when they end lower: the highest level both mean curves reach.
    """
    bases = [k[: -len("+long")] for k in results if k.endswith("+long") and k[: -len("+long")] in results]
    if not bases:
        return ["ratio: nan"]
    out, ratios = [f"dominance pruner at equal final HV (mean curves over seeds; {exhaustive:.0f} s trains every "
                   "feasible point once):"], {}
    for base in bases:
        plain, long_runs = results[base], results[f"{base}+long"]
        final_plain = statistics.fmean(r["hv"][-1] for r in plain)
        final_pruned = statistics.fmean(r["hv"][-1] for r in long_runs)
        target = min(final_plain, final_pruned)
        top = max(max(r["compute"][-1] for r in plain), max(r["compute"][-1] for r in long_runs))
        grid = [top * i / 4000 for i in range(4001)]
        c_plain = first_reaching(grid, mean_curve_vs_compute(plain, grid), target)
        c_pruned = first_reaching(grid, mean_curve_vs_compute(long_runs, grid), target)
        ratios[base] = 1.0 - c_pruned / c_plain if c_plain else math.nan
        lost = "" if final_pruned >= final_plain - 1e-12 else f"; pruning lost {final_plain - final_pruned:.4f}"
        out.append(f"  {base}: final HV {final_plain:.4f} without ({len(plain[0]['hv'])} proposals), "
                   f"{final_pruned:.4f} with ({len(long_runs[0]['hv'])} proposals){lost}; to reach {target:.4f}: "
                   f"{c_plain:.0f} s without, {c_pruned:.0f} s with: {100 * ratios[base]:.1f}% saved")
    key = "tpe" if "tpe" in ratios else bases[0]
    return out + [f"ratio: {ratios[key]:.3f}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="bench/data/resnext_tabular.csv")
    ap.add_argument("--trials", type=int, default=150, help="proposals (Optuna trials) per run")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--pruned", default="tpe,random", help="samplers also run with the dominance pruner")
    ap.add_argument("--eps", type=float, default=None, help="dominance margin (default: dse.trials.dominance.EPS)")
    ap.add_argument("--min-trials", type=int, default=None, help="dominance: records needed at a rung")
    ap.add_argument("--warmup", type=float, default=None, help="dominance: share of epochs never pruned")
    ap.add_argument("--workers", type=int, default=0,
                    help="N > 0: asynchronous workers on a simulated clock, with and without moasha (see replay_async)")
    ap.add_argument("--moasha", default="random,tpe,nsga2,gp", help="with --workers: samplers also run with moasha")
    ap.add_argument("--eta", type=int, default=3, help="moasha: keep the top 1/eta at a rung")
    ap.add_argument("--min-rung", type=int, default=1, help="moasha: first rung (epochs)")
    ap.add_argument("--rung-score", choices=("inplace", "branch", "loss", "oracle"), default="inplace",
                    help="with --workers: moasha ranks a rung by the accuracy in place, by the table's decay "
                         "branch there (a wsd table made with --rungs; the branch's CPU seconds are charged), by "
                         "the epoch's mean training loss, or (oracle: a bound, not a method) by the final accuracy")
    ap.add_argument("--long", type=int, default=None, help="with --workers: proposals per run (default 2 x --trials)")
    ap.add_argument("--long-for", action="append", default=[], metavar="SAMPLER=N",
                    help="with --workers: proposals per run for one sampler (e.g. gp=60; GP refits on every ask)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="with --cache: start at this seed (processes sharing a cache split the seeds)")
    ap.add_argument("--cache", default=None, help="with --workers: keep each seed's run here as JSON (resumable)")
    ap.add_argument("--out", default=None, help="also write the printed lines to this file")
    ap.add_argument("--make-synthetic", default=None, metavar="FILE", help="write a fake table and exit")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of --make-synthetic")
    args = ap.parse_args(argv)
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.make_synthetic:
        make_synthetic(Path(args.make_synthetic), args.epochs)
        print(f"wrote {args.make_synthetic}")
        return 0
    path = Path(args.table)
    table, meta = read_table(path)
    space = load_space(meta)
    check_ids(table, space)
    if args.workers > 0:
        t0 = time.time()
        lines = run_async(args, table, meta, space, path, t0)
        return emit(args, argv, lines, t0)
    from dse.trials import dominance
    settings = dominance.DominancePruner(**{k: v for k, v in (("eps", args.eps), ("min_trials", args.min_trials),
                                                               ("warmup", args.warmup)) if v is not None})
    results: dict = {}
    samplers = [s for s in args.samplers.split(",") if s]
    pruned = [s for s in args.pruned.split(",") if s and s != "none"]
    t0 = time.time()
    for name in samplers + [f"{s}+dominance" for s in pruned]:
        base = name.split("+")[0]
        pruner = settings if name.endswith("+dominance") else None
        results[name] = [replay(table, space, meta, base, seed, args.trials, pruner) for seed in range(args.seeds)]
        print(f"# {name}: {args.seeds} seeds done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    for base in [s for s in pruned if s in samplers]:  # pruned again with 2x the proposals: the equal-HV test
        results[f"{base}+long"] = [replay(table, space, meta, base, seed, 2 * args.trials, settings)
                                   for seed in range(args.seeds)]
        print(f"# {base}+dominance x2 proposals done ({time.time() - t0:.0f} s)", file=sys.stderr)
    results["_pruner"] = settings
    return emit(args, argv, report(table, meta, space, results, args, str(path)), t0)


def emit(args, argv, lines: list[str], t0: float) -> int:
    """Print the lines under the command that made them (and write them to --out)."""
    command = " ".join(["python bench/search_efficiency.py", *(sys.argv[1:] if argv is None else argv)])
    text = "\n".join([f"command: {command.strip()}  ({time.time() - t0:.0f} s)", *lines])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def check_ids(table: dict, space) -> None:
    """Every grid point of the space within its budget has a row (the table is complete), else say what is
    missing (points over the budget are refused before training, so they need none)."""
    points = [space.point(v) for v in space.grid_values()]
    ids = {p.id for p in points if all(x <= 0 for x in space.violations(p).values())}
    missing = ids - set(table)
    if missing:
        print(f"# note: {len(missing)} of the space's {len(ids)} points within budget are not in the table yet; a sampler that "
              "proposes one fails", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
