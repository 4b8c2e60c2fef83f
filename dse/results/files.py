"""Result files of a study, made from its storage alone (no training): written after every trial by
dse.search and rebuilt by `python -m dse.report` (which adds report.html):

    trials.csv    one row per trial: number, state, status, point id, params, FLOPs, accuracy, error, epochs,
                  train seconds, reason, then the sampled space parameters (space.*) and the Point's fields
                  flattened (point.*)
    pareto.csv    the non-dominated finished trials over the study's objectives (single-objective studies:
                  accuracy and FLOPs)
    pareto.png    accuracy vs FLOPs, the front highlighted, seeds as error bars, rejected points and the
                  budget faint (matplotlib); pareto.pdf and pareto.svg for papers, pareto.caption.txt
    pareto.html   the same, interactive (plotly; one plotly.min.js per run directory)
    provenance.yaml  how the trials were made, from the storage: settings, seeds, sizing, dse version and
                  commit (dse.results.made); trials.csv itself stays a plain CSV
    report.html   one self-contained page: Pareto front, EDF, trends, importance, ablation table, learning
                  curves, sortable trials (dse.results.page; written by `python -m dse.report` only)
    best.yaml     the front's Points with their numbers, cheapest first (layout below); best/<rank>_<id>.yaml
                  holds each Point alone, for `python -m dse.inspect best/0_<id>.yaml`

best.yaml's layout:

    study: <name>
    front:                      # the Pareto front, by FLOPs (rank 0 = the cheapest; the last, most accurate)
    - trial: 7                  # the Optuna trial number
      point_id: 19a6781cd3
      accuracy: 0.8612          # validation accuracy (a fraction)
      flops: 5270000            # multiply-adds of the point as declared
      params: 135000
      file: best/0_19a6781cd3.yaml   # the same Point alone
      point: {...}              # the Point (Point.to_dict()): `python -m dse.inspect best.yaml` reads it

trials.csv's rows are made from each trial's record (dse.record) by `row`; plots, W&B and the summary line
read these rows.
"""
from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path

import yaml

from dse.record import TrialRecord

FIXED = ["number", "state", "status", "label", "seed", "point_id", "name", "params", "flops", "acts", "rf",
         "rf_stride", "latency_ms", "accuracy", "error",
         "test_acc", "epochs", "train_seconds", "reason", "width_scale", "trained_params", "trained_flops"]
SENSE = {"accuracy": -1, "error": 1, "flops": 1, "params": 1, "acts": 1, "rf": -1, "latency_ms": 1}  # +1: lower is better
COLUMNS = {"latency": "latency_ms"}  # an objective's trials.csv column, where the names differ


def check_writable(folder: Path, what: str, hint: str = "", create: bool = True) -> None:
    """Make `folder` (and its parents) or refuse in one line: a UserError naming it, why, and `hint`. With
    `create` False nothing is made: the folder, or its nearest existing parent, must take a file."""
    from dse.errors import UserError

    folder = probe = Path(folder)
    while not create and not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".dse-write-check-"):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UserError(f"{what}: cannot write to {folder} ({why.lower()})" + (f"; {hint}" if hint else "")) \
            from None


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
    r = TrialRecord.from_trial(trial)
    acc = r.accuracy

    def given(value, default):
        return default if value is None else value

    out = {"number": trial.number, "state": trial.state.name, "status": given(r.status, ""),
           "label": given(r.label, ""), "seed": r.seed, "point_id": given(r.point_id, ""),
           "name": (r.point or {}).get("name", ""), "params": r.params, "flops": r.flops,
           "acts": r.acts, "rf": r.rf, "rf_stride": r.rf_stride, "latency_ms": r.latency_ms,
           "accuracy": acc, "error": None if acc is None else 1.0 - acc,
           "val_acc_std": r.val_acc_std if acc is not None else None, "seeds": r.seeds,
           "test_acc": r.test_acc if r.trained else None, "epochs": r.epochs,
           "train_seconds": r.train_seconds, "reason": given(r.reason, ""),
           "width_scale": given(r.width_scale, 1.0), "trained_params": given(r.trained_params, r.params),
           "trained_flops": given(r.trained_flops, r.flops),
           "flops_violation": trial.constraints.get("flops.max")}
    out.update({f"space.{k}": v for k, v in trial.params.items() if k not in ("cell", "seed")})
    out.update(flatten(r.point or {}, "point"))
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

    scores = [tuple(SENSE[k] * float(r[k]) for k in keys) for r in done]  # lower is better in each
    if len(keys) == 2 and all(math.isfinite(v) for s in scores for v in s):
        keep = _front2(scores)
    else:
        keep = [not any(all(o <= v for o, v in zip(q, s)) and q != s for q in scores) for s in scores]
    front = [r for r, kept in zip(done, keep) if kept]
    return sorted(front, key=lambda r: (r["flops"], -r["accuracy"]))


def _front2(scores: list[tuple[float, float]]) -> list[bool]:
    """Which 2-objective scores (lower is better) no other score dominates (<= in both, < in one), in one sort
    and one sweep, O(n log n), instead of comparing every pair (5 s at 10k trials). Equal scores all stay."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    keep = [False] * len(scores)
    best = math.inf  # the lowest second score among strictly lower first scores
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and scores[order[j]][0] == scores[order[i]][0]:
            j += 1
        low = scores[order[i]][1]  # sorted: the group's lowest second score comes first
        for k in order[i:j]:
            keep[k] = scores[k][1] == low and low < best
        best = min(best, low)
        i = j
    return keep


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


def plot_png(path: Path, table: list[dict], front: list[dict], title: str, trained_as: str = "") -> None:
    """pareto.png with pareto.pdf, pareto.svg and pareto.caption.txt (ending with `trained_as`) beside it
    (dse.results.figures)."""
    from dse.results import figures
    figures.write_static(Path(path).parent, title.split(":")[0], table, front, title, trained_as)


def plot_html(path: Path, table: list[dict], front: list[dict], title: str) -> None:
    """The same plot with plotly; the run directory shares one plotly.min.js (dse.results.figures)."""
    from dse.results import figures
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
        point = TrialRecord.from_trial(trials[r["number"]]).point
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
    """Write every result file into run_dir; returns {'rows': …, 'front': …, 'made': provenance.yaml's dict}."""
    from dse.results import made

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    table = rows(optuna_study)
    front = pareto(table, objectives_of(optuna_study))
    write_csv(run_dir / "trials.csv", table)
    write_csv(run_dir / "pareto.csv", front)
    origin = made.write(optuna_study, run_dir)
    if plots:
        title = f"{optuna_study.study_name}: {len(front)} on the front of {len(scored(table))} trained trials"
        plot_png(run_dir / "pareto.png", table, front, title, made.words(origin))
        plot_html(run_dir / "pareto.html", table, front, title)
        write_best(run_dir, optuna_study, front)
    return {"rows": table, "front": front, "made": origin}
