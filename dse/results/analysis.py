"""Design-space analysis of studies (no training): the error EDFs, KS tests, trends, importances and the
refined space that `python -m dse.analyze` writes (the command and its files: dse.analyze); report.html and the
W&B summary read the same `Analysis`.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dse.results import edf as E
from dse.errors import UserError
from dse.record import ZEROCOST, TrialRecord

MEASURES = ("flops", "params", "acts", "none")
# Trained trials a study needs before its parameter importances are computed: below it a forest over a
# handful of points ranks noise (issue 21 saw importances printed from 8 trials).
MIN_IMPORTANCE = 10
# Trained trials with a zero-cost score (dse.train.zerocost) a study needs before that score's Spearman rho
# against accuracy is given: at n = 10 an uncorrelated score still reaches |rho| > 0.56 one time in ten.
MIN_ZEROCOST = 10
EDF_COLUMNS = ["group", "number", "error", "complexity", "weight", "edf", "edf_normalized"]


@dataclass
class Record:
    """One trained trial: its study, number, error, counts and sampled values."""

    run: str
    number: int
    error: float
    flops: float
    params: float
    acts: float | None
    values: dict
    point: dict
    history: list = field(default_factory=list)
    group: str = ""
    zerocost: dict | None = None  # the trained net's zero-cost scores at initialization, when recorded


@dataclass
class Run:
    """One study read from its run directory."""

    label: str
    path: Path
    study: object
    space: str | None
    space_file: str | None
    records: list


@dataclass
class Analysis:
    """Everything analyze computes: the report and W&B read it too."""

    runs: list
    records: list
    groups: list
    measure: str
    edges: np.ndarray | None
    edf_rows: list
    curves: dict
    ks_rows: list
    trend_rows: list
    importance_rows: list
    refined: dict
    zerocost_rows: list = field(default_factory=list)


# ----- reading -----
def study_run(study, run_dir: Path, label: str, space_file: str | None = None) -> Run:
    """A Run of an already opened study (`space_file`: the file the run was made with, when recorded)."""
    records = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        r = TrialRecord.from_trial(t)
        if r.accuracy is None:
            continue
        records.append(Record(run=label, number=t.number, error=1.0 - float(r.val_acc),
                              flops=float(r.flops or 0), params=float(r.params or 0),
                              acts=None if r.acts is None else float(r.acts),
                              values={k: v for k, v in t.params.items() if k not in ("cell", "seed")},
                              point=r.point or {}, history=list(r.history or []), zerocost=r.zerocost))
    return Run(label, Path(run_dir), study, study.user_attrs.get("space"), space_file, records)


def assign_groups(runs: list[Run], by: str | None) -> list[Record]:
    """Every trained record with its group: the run's label, or `by=value`."""
    records = [r for run in runs for r in run.records]
    if by is None:
        for r in records:
            r.group = r.run
        return records
    kept = [r for r in records if r.values.get(by) is not None]
    if not kept:
        names = sorted({k for r in records for k in r.values})
        raise UserError(f"--by {by}: no trained trial has that parameter; parameters: {', '.join(names) or '(none)'}")
    for r in kept:
        r.group = f"{by}={r.values[by]}"
    return kept


def complexity_of(records: list[Record], measure: str) -> np.ndarray:
    """The chosen complexity of every record (flops for `none`, which does not normalize)."""
    if measure == "acts":
        missing = [r for r in records if r.acts is None]
        if missing:
            raise UserError(f"--normalize acts: {len(missing)} of {len(records)} trained trials carry no 'acts' "
                            "attribute (trained before dse recorded activations); use flops or params")
    key = "flops" if measure == "none" else measure
    values = np.array([getattr(r, key) for r in records], dtype=float)
    if measure != "none" and (values <= 0).any():
        raise UserError(f"--normalize {measure}: some trials have no {key} count (0); cannot bin them on a log scale")
    return values


# ----- computing -----
def edf_table(records: list[Record], groups: list[str], complexity: np.ndarray, measure: str, n_bins: int):
    """(rows of edf.csv, edges, weights): the plain and normalized EDF value at every trial."""
    names = np.array([r.group for r in records])
    errors = np.array([r.error for r in records])
    if measure == "none":
        edges, weights = None, E.uniform_weights(names)
    else:
        edges = E.log_edges(complexity, n_bins)
        weights = E.normalized_weights(complexity, names, n_bins, edges)
    plain = E.uniform_weights(names)
    rows = []
    for g in groups:
        m = names == g
        f_plain = E.edf_at(errors[m], plain[m], errors[m])
        f_norm = E.edf_at(errors[m], weights[m], errors[m])
        for r, c, w, a, b in zip(np.array(records, dtype=object)[m], complexity[m], weights[m], f_plain, f_norm):
            rows.append({"group": g, "number": r.number, "error": r.error, "complexity": float(c), "weight": float(w),
                         "edf": float(a), "edf_normalized": float(b)})
    return rows, edges, weights


def curves_of(records, groups, complexity, edges, weights, reps: int = 500) -> dict:
    """Per group: a grid of errors, the plain and normalized EDF on it and their bootstrap bands."""
    names = np.array([r.group for r in records])
    errors = np.array([r.error for r in records])
    grid = np.linspace(errors.min(), errors.max(), 200) if len(errors) else np.array([])
    out = {}
    for k, g in enumerate(groups):
        m = names == g
        e, c, w = errors[m], complexity[m], weights[m]
        plain = E.edf_at(e, np.full(m.sum(), 1.0 / m.sum()), grid)
        norm = E.edf_at(e, w, grid)
        band_edges = edges if edges is not None else np.array([c.min(), c.max() + 1])
        lo, hi = E.bootstrap_band(e, c, band_edges, grid, normalized=edges is not None, reps=reps, seed=k)
        out[g] = {"grid": grid, "plain": plain, "normalized": norm, "lo": lo, "hi": hi, "n": int(m.sum())}
    return out


def ks_table(records, groups, weights) -> list[dict]:
    """Pairwise KS between the groups' normalized EDFs (and the plain ones), with an asymptotic p-value."""
    names = np.array([r.group for r in records])
    errors = np.array([r.error for r in records])
    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            ma, mb = names == a, names == b
            d, x, diff = E.ks(errors[ma], weights[ma], errors[mb], weights[mb])
            d_plain = E.ks(errors[ma], np.full(ma.sum(), 1 / ma.sum()), errors[mb], np.full(mb.sum(), 1 / mb.sum()))[0]
            na, nb = E.effective_n(weights[ma]), E.effective_n(weights[mb])
            rows.append({"group_a": a, "group_b": b, "n_a": int(ma.sum()), "n_b": int(mb.sum()), "ks": d,
                         "at_error": x, "edf_a_minus_b": diff, "ks_plain": d_plain, "n_eff_a": round(na, 2),
                         "n_eff_b": round(nb, 2), "p_value": E.ks_pvalue(d, na, nb)})
    return rows


def _bucket(values: list) -> tuple[list, list]:
    """(bucket of every value, buckets in order): the values themselves when few or not numbers, else 6
    quantile ranges."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    distinct = sorted(set(values)) if numeric else list(dict.fromkeys(sorted(values, key=str)))
    if len(distinct) <= 12 or not numeric:
        return values, distinct
    edges = np.quantile(np.array(values, dtype=float), np.linspace(0, 1, 7))
    labels = [f"{edges[k]:.3g}-{edges[k + 1]:.3g}" for k in range(6)]
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 5)
    return [labels[k] for k in idx], list(dict.fromkeys(labels[k] for k in sorted(set(idx))))


def trend_table(records, groups, reps: int = 10_000) -> list[dict]:
    """Per group, sampled parameter and value: n, median and min error, bootstrap min with 95% interval."""
    rows = []
    for g in groups:
        mine = [r for r in records if r.group == g]
        names = sorted({k for r in mine for k in r.values})
        for name in names:
            have = [r for r in mine if r.values.get(name) is not None]
            buckets, order = _bucket([r.values[name] for r in have])
            for value in order:
                errs = np.array([r.error for r, b in zip(have, buckets) if b == value])
                mean, lo, hi = E.bootstrap_min(errs, reps=reps, seed=len(rows))
                rows.append({"group": g, "param": name, "value": value, "n": len(errs),
                             "median_error": float(np.median(errs)), "min_error": float(errs.min()),
                             "boot_min": mean, "boot_min_lo": lo, "boot_min_hi": hi})
    return rows


def importance_table(runs: list[Run]) -> list[dict]:
    """fANOVA and PED-ANOVA importances for low error, per study, from its trained trials only."""
    import warnings

    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    rows = []
    for run in runs:
        study = error_study(run)
        n = len(study.trials)
        if n < MIN_IMPORTANCE:
            continue
        # PED-ANOVA: which values put a trial in the best `q` of its study (low error: the study minimizes)
        q = min(0.5, max(0.1, 5 / n))
        found = {}
        for key, evaluator in (("fanova", FanovaImportanceEvaluator(seed=0)),
                               ("ped_anova", PedAnovaImportanceEvaluator(target_quantile=q))):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found[key] = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
            except (ValueError, RuntimeError):  # e.g. no parameter varies
                found[key] = {}
        for name in sorted(set(found["fanova"]) | set(found["ped_anova"]),
                           key=lambda k: -found["fanova"].get(k, 0.0)):
            rows.append({"study": run.label, "param": name, "fanova": found["fanova"].get(name),
                         "ped_anova": found["ped_anova"].get(name), "n_trials": n, "ped_anova_quantile": q})
    return rows


def spearman(xs, ys) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None when either side is constant."""
    from scipy.stats import rankdata

    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return float(np.corrcoef(rankdata(xs), rankdata(ys))[0, 1])


def zerocost_table(runs: list[Run]) -> list[dict]:
    """Per study and zero-cost score: how many trained trials carry it, and its Spearman rho against their
    accuracy (None below MIN_ZEROCOST trials). Studies whose trials carry no scores give no rows."""
    rows = []
    for run in runs:
        if not any(r.zerocost for r in run.records):
            continue
        for score in ZEROCOST:
            have = [(r.zerocost[score], 1.0 - r.error) for r in run.records
                    if r.zerocost and isinstance(r.zerocost.get(score), (int, float))]
            rho = spearman(*zip(*have)) if len(have) >= MIN_ZEROCOST else None
            rows.append({"study": run.label, "score": score, "n_trials": len(have), "spearman_rho": rho,
                         "min_trials": MIN_ZEROCOST})
    return rows


def error_study(run: Run):
    """An in-memory single-objective study (minimize error) of the run's trained trials (distributions from
    the stored trials, or inferred from the values seen when the run has no study: see rows_run)."""
    import optuna

    trials = {t.number: t for t in run.study.get_trials(deepcopy=False)} if run.study is not None else {}
    seen = _inferred(run.records) if run.study is None else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for r in run.records:
        if run.study is not None:
            t = trials[r.number]
            params = {k: v for k, v in t.params.items() if k not in ("cell", "seed")}
            dists = {k: t.distributions[k] for k in params}
        else:
            params = {k: v for k, v in r.values.items() if v is not None and k in seen}
            dists = {k: seen[k] for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r.error))
    return study


def _inferred(records: list[Record]) -> dict:
    """Optuna distributions from the values seen: int/float ranges for numbers, categories otherwise."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name in sorted({k for r in records for k in r.values}):
        vals = [r.values[name] for r in records if r.values.get(name) is not None]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in vals) and min(vals) < max(vals):
            out[name] = IntDistribution(min(vals), max(vals))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and min(vals) < max(vals):
            out[name] = FloatDistribution(float(min(vals)), float(max(vals)))
        elif len(set(map(str, vals))) > 1 and all(isinstance(v, (str, int, float, bool)) for v in vals):
            out[name] = CategoricalDistribution(sorted(set(vals), key=str))
    return out


def rows_run(rows: list[dict], label: str, run_dir: Path) -> Run:
    """A Run from dse.report rows (trials.csv's dicts: status, number, accuracy, flops, params, space.*)."""
    records = [Record(run=label, number=int(r["number"]), error=1.0 - float(r["accuracy"]),
                      flops=float(r.get("flops") or 0), params=float(r.get("params") or 0),
                      acts=None if r.get("acts") is None else float(r["acts"]),
                      values={k[6:]: v for k, v in r.items() if k.startswith("space.") and v not in (None, "")},
                      point={})
               for r in rows if r.get("status") == "ok" and r.get("accuracy") is not None]
    return Run(label, Path(run_dir), None, None, None, records)


def check_options(measure: str, n_bins: int, top: float) -> None:
    if measure not in MEASURES:
        raise UserError(f"--normalize: unknown measure {measure!r}; valid: {', '.join(MEASURES)}")
    if n_bins < 1:
        raise UserError(f"--bins: must be >= 1, got {n_bins}")
    if not 0 < top <= 1:
        raise UserError(f"--top: must be a fraction in (0, 1], got {top}")


def analyze_runs(runs: list[Run], by: str | None = None, measure: str = "flops", n_bins: int = 6,
                 top: float = 0.25, reps: int = 500, refine: bool = True) -> Analysis:
    """Every table of already read runs."""
    from dse.results import refine as refining
    check_options(measure, n_bins, top)
    for run in runs:
        if not run.records:
            raise UserError(f"{run.path}: study {run.study.study_name!r} has no trained trials (status ok) yet")
    records = assign_groups(runs, by)
    groups = list(dict.fromkeys(r.group for r in records))
    complexity = complexity_of(records, measure)
    edf_rows, edges, weights = edf_table(records, groups, complexity, measure, n_bins)
    curves = curves_of(records, groups, complexity, edges, weights, reps)
    refined = {}
    if refine:
        refined = {run.label: refining.refine_run(run, top) for run in runs if refining.is_anynet_run(run)}
        refined = {k: v for k, v in refined.items() if v is not None}
    return Analysis(runs=runs, records=records, groups=groups, measure=measure, edges=edges, edf_rows=edf_rows,
                    curves=curves, ks_rows=ks_table(records, groups, weights),
                    trend_rows=trend_table(records, groups), importance_rows=importance_table(runs), refined=refined,
                    zerocost_rows=zerocost_table(runs))


# ----- writing -----
def write_rows(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """A CSV of dict rows (columns: given, else the first row's keys)."""
    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r[k] for k in columns})


def write(analysis: Analysis, out: Path) -> list[str]:
    """Write every file of the analysis into `out`; returns the file names."""
    from dse.results import analysis_plots as plots
    from dse.results import refine
    out.mkdir(parents=True, exist_ok=True)
    written = ["edf.csv", "edf.png", "ks.csv", "trends.csv", "trends.png", "importance.csv", "importance.png",
               "zerocost.csv"]
    write_rows(out / "edf.csv", analysis.edf_rows, EDF_COLUMNS)
    write_rows(out / "ks.csv", analysis.ks_rows, ["group_a", "group_b", "n_a", "n_b", "ks", "at_error",
                                                  "edf_a_minus_b", "ks_plain", "n_eff_a", "n_eff_b", "p_value"])
    write_rows(out / "trends.csv", analysis.trend_rows, ["group", "param", "value", "n", "median_error", "min_error",
                                                         "boot_min", "boot_min_lo", "boot_min_hi"])
    write_rows(out / "importance.csv", analysis.importance_rows, ["study", "param", "fanova", "ped_anova",
                                                                  "n_trials", "ped_anova_quantile"])
    write_rows(out / "zerocost.csv", analysis.zerocost_rows, ["study", "score", "n_trials", "spearman_rho",
                                                              "min_trials"])
    plots.edf_png(out / "edf.png", analysis)
    plots.trends_png(out / "trends.png", analysis)
    plots.importance_png(out / "importance.png", analysis)
    many = len(analysis.refined) > 1
    for label, result in analysis.refined.items():
        stem = f"refined_{label}" if many else "refined"
        written += refine.write(result, out, stem)
        write_rows(out / f"{stem}.csv", result["fits"])  # the per-model fits
        written.append(f"{stem}.csv")
    return written


def summary(analysis: Analysis) -> list[str]:
    """The lines printed at the end: per group n, best and median error; KS per pair."""
    lines = []
    for g in analysis.groups:
        errs = [r.error for r in analysis.records if r.group == g]
        lines.append(f"{g}: {len(errs)} trained, best error {100 * min(errs):.2f}%, "
                     f"median {100 * np.median(errs):.2f}%")
    for k in analysis.ks_rows:
        better = k["group_a"] if k["edf_a_minus_b"] > 0 else k["group_b"]
        lines.append(f"KS {k['group_a']} vs {k['group_b']}: {k['ks']:.3f} normalized ({k['ks_plain']:.3f} plain), "
                     f"p ~ {k['p_value']:.3g}; largest gap at {100 * k['at_error']:.2f}% error, where {better}'s "
                     f"normalized EDF is higher")
    for run in analysis.runs:
        if len(run.records) < MIN_IMPORTANCE:
            lines.append(f"{run.label}: no parameter importance from {len(run.records)} trained trials "
                         f"(needs at least {MIN_IMPORTANCE})")
    for label in dict.fromkeys(r["study"] for r in analysis.zerocost_rows):
        mine = [r for r in analysis.zerocost_rows if r["study"] == label]
        given = [f"{r['score']} {r['spearman_rho']:+.2f} (n {r['n_trials']})" for r in mine
                 if r["spearman_rho"] is not None]
        short = [f"{r['score']} (n {r['n_trials']})" for r in mine if r["n_trials"] < MIN_ZEROCOST]
        flat = [r["score"] for r in mine if r["spearman_rho"] is None and r["n_trials"] >= MIN_ZEROCOST]
        text = ", ".join(given) if given else "none"
        if short:
            text += f"; not given for {', '.join(short)}: needs at least {MIN_ZEROCOST} trained trials with the score"
        if flat:
            text += f"; not given for {', '.join(flat)}: the score or the accuracy is the same for every trial"
        lines.append(f"{label}: zero-cost scores, Spearman rho against accuracy: {text}")
    for label, result in analysis.refined.items():
        lines.append(f"{label}: refined with w0 {result['ranges']['w0']}, wa {result['ranges']['wa']}, "
                     f"wm {result['ranges']['wm']} from the best {len(result['fits'])} models")
    return lines
