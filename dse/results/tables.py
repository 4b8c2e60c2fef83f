"""Ablation tables, the library half: rows of our results beside a paper's numbers, Kendall τ with its
bootstrap interval, and the Markdown, LaTeX and CSV renderings. The command is dse.table.

Kendall τ (τ-b, scipy's) compares the ranking of our seed-mean errors with the paper's over the rows that
have both. With several seeds the notes also give τ per seed, and every table gives a bootstrap 95%
interval of τ that resamples seeds and rows with replacement (seeded: the same storage gives the same
interval). table.csv repeats τ and its interval on every row.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from dse import yamlfile
from dse.errors import UserError, choose
from dse.record import TrialRecord
from dse.rundir import SavedRun

PAPERS = Path(__file__).resolve().parents[1] / "data" / "papers.yaml"
PENDING = "pending"
RESAMPLES = 2000  # bootstrap resamples of seeds x rows


def papers() -> dict:
    """All paper tables in dse/data/papers.yaml."""
    return yamlfile.read(PAPERS, "paper tables file")


def paper_table(key: str) -> dict:
    """One paper table by key, or a UserError listing the keys."""
    return choose("paper table", key, papers())


@dataclass
class Row:
    """One table row: our side (possibly pending) and the paper's side (possibly absent)."""

    label: str
    params: int | None = None
    flops: int | None = None
    errors: tuple[float, ...] = ()
    paper_params: str | None = None
    paper_error: float | None = None  # the reference error: the paper's (or, in dse.calibrate, another budget's)
    seeds: tuple[int, ...] = ()  # the seed of each error, when known

    @property
    def mean(self) -> float | None:
        """Mean test error (%) over completed runs, or None."""
        return statistics.fmean(self.errors) if self.errors else None

    @property
    def std(self) -> float:
        """Sample std of the test error (0 for one run)."""
        return statistics.stdev(self.errors) if len(self.errors) > 1 else 0.0


def error_pct(acc: float) -> float:
    """Test error in percent from an accuracy stored as a fraction (<= 1) or a percentage."""
    return 100.0 * (1.0 - acc) if acc <= 1.0 else 100.0 - acc


def parse_printed(text) -> float | None:
    """'36.5M' / '~25M' -> 36.5e6 (None for no number)."""
    if text is None:
        return None
    s = str(text).strip().lstrip("~")
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(s[-1:], 1.0)
    try:
        return float(s.rstrip("kMG")) * scale
    except ValueError:
        return None


def like_printed(value: int | None, printed: str | None) -> str:
    """Our count in millions, to the paper's printed precision (2 decimals when there is none)."""
    if value is None:
        return "—"
    digits = 2
    if printed and "." in str(printed):
        digits = len(str(printed).rstrip("kMG").split(".")[1])
    elif printed:
        digits = 0 if parse_printed(printed) else 2
    return f"{value / 1e6:.{digits}f}M"


def completed_runs(study_name: str, url: str | None, run_dir: Path) -> dict[str, dict[int, float]]:
    """{cell label: {seed: test error %}} from COMPLETE trials of the study; {} when there is no storage yet."""
    study = stored_study(study_name, url, run_dir)
    return by_seed(study) if study is not None else {}


def stored_study(study_name: str, url: str | None, run_dir: Path):
    """The study in its storage, or None when there is none yet (a UserError when the run directory's config.yaml
    is there but the SQLite storage it was written beside is not: a damaged run, not one that has not started)."""
    saved = SavedRun.read(run_dir)  # a corrupt config.yaml is named before any storage is opened
    if not url and not (run_dir / "study.db").is_file():
        if (run_dir / "config.yaml").is_file() and not saved.storage:
            raise UserError(f"{run_dir}: config.yaml is there but study.db is not: the run's storage is missing "
                            "(pass --storage URL if it lives elsewhere)")
        return None
    import optuna

    from dse.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, run_dir, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None


def trained_as(study, saved: str | None = None) -> str | None:
    """How the table's trials were trained: from each trial's recorded settings; `saved` (the run's config.yaml
    in words, dse.rundir) only for old studies whose trials record none."""
    from dse import provenance
    if study is None:
        return None
    records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    found = [r.settings for r in records if r.trained]
    if any(found):
        line = provenance.describe([f for f in found if f])
        missing = sum(f is None for f in found)
        return line + (f" ({missing} older trials record no settings.)" if missing else "")
    return saved and saved + " (From config.yaml: these trials record no settings of their own.)"


def by_seed(study) -> dict[str, dict[int, float]]:
    """{cell label: {seed: test error %}} over COMPLETE trials of an Optuna study."""
    import optuna

    out: dict[str, dict[int, float]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        r = TrialRecord.from_trial(t)
        label, acc = t.params.get("cell", r.cell), r.test_acc
        if label is None or acc is None or r.status not in (None, "ok"):
            continue
        out.setdefault(str(label), {})[int(t.params.get("seed", 0))] = error_pct(float(acc))
    return out


def seed_taus(rows: list[Row]) -> dict[int, float]:
    """Kendall τ of each seed's errors alone (seeds that cover at least 3 rows with a paper error)."""
    out = {}
    for seed in sorted({s for r in rows for s in _seeds_of(r)}):
        only = [Row(r.label, paper_error=r.paper_error,
                    errors=tuple(e for s, e in zip(_seeds_of(r), r.errors) if s == seed)) for r in rows]
        tau, n = kendall(only)
        if tau is not None and n >= 3:
            out[seed] = tau
    return out


def seed_rows(labels, per_seed: dict[str, dict[int, float]], reference: dict[str, float]) -> list[Row]:
    """Rows of our errors per seed against reference errors (the paper's column, or another run's means)."""
    rows = []
    for label in labels:
        runs = sorted(per_seed.get(label, {}).items())
        rows.append(Row(label, errors=tuple(e for _, e in runs), seeds=tuple(s for s, _ in runs),
                        paper_error=reference.get(label)))
    return rows


def paper_column(spec) -> dict[str, float]:
    """{row label: the paper's error} for a study's `paper: {table, column}` ({} when it names no table)."""
    if not isinstance(spec, dict) or "table" not in spec:
        return {}
    table = paper_table(spec["table"])
    column = spec.get("column", table.get("metric"))
    return {r["label"]: float(r[column]) for r in table.get("rows", []) if r.get(column) is not None}


def params_without_norm(point) -> int:
    """Params of the built module without BatchNorm's affine params (some papers print sizes that way)."""
    import torch

    from dse.network import build

    with torch.device("meta"):  # shapes only: no memory, no init cost
        module = build(point)
    norms = (torch.nn.modules.batchnorm._BatchNorm,)
    skip = {id(p) for m in module.modules() if isinstance(m, norms) for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)


def build_rows(points: dict, table: dict, column: str, per_seed: dict[str, dict[int, float]]) -> list[Row]:
    """Rows in the paper's order, then study cells the paper lacks; paper rows the study lacks are kept."""
    from dse.cost import complexity

    no_norm = choose("params_convention", table.get("params_convention", "all"), {"all": False, "no_norm": True})

    by_label = {r["label"]: r for r in table.get("rows", [])}
    labels = list(by_label) + [lab for lab in points if lab not in by_label]
    rows = seed_rows(labels, per_seed, {lab: r.get(column) for lab, r in by_label.items()})
    for row in rows:
        row.paper_params = by_label.get(row.label, {}).get("params")
        if row.label in points:
            c = complexity(points[row.label])
            row.params, row.flops = c.params, c.flops
            if no_norm and row.paper_params:
                row.params = params_without_norm(points[row.label])
    return rows


def kendall(rows: list[Row]) -> tuple[float | None, int]:
    """Kendall τ-b between our mean errors and the paper's errors over rows with both, and that n."""
    pairs = [(r.mean, r.paper_error) for r in rows if r.mean is not None and r.paper_error is not None]
    if len(pairs) < 2:
        return None, len(pairs)
    return _tau_b([a for a, _ in pairs], [b for _, b in pairs]), len(pairs)


def _tau_b(ours, theirs) -> float | None:
    """scipy's Kendall τ-b (ties counted in both variables); None when one side is constant."""
    from scipy.stats import kendalltau

    tau = kendalltau(ours, theirs).statistic
    return None if math.isnan(tau) else float(tau)


def bootstrap_tau(rows: list[Row], resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """Bootstrap 95% interval (2.5th, 97.5th percentile) of τ of the seed-mean errors against the reference.

    Each resample draws the seeds and the rows with replacement (as many as there are) and takes τ-b of the
    rows' means over the drawn seeds; a drawn row without a run at any drawn seed drops out, and a resample
    left with one distinct row or constant means has no τ and is skipped. Seeded: the same rows give the
    same interval. None when the rows themselves have no τ (fewer than 2 rows with both errors, or constant).
    """
    import warnings

    import numpy as np

    used = [r for r in rows if r.errors and r.paper_error is not None]
    if kendall(used)[0] is None:
        return None
    seeds = sorted({s for r in used for s in _seeds_of(r)})
    errors = np.full((len(used), len(seeds)), np.nan)
    for i, row in enumerate(used):
        for s, e in zip(_seeds_of(row), row.errors):
            errors[i, seeds.index(s)] = e
    reference = np.array([r.paper_error for r in used], dtype=float)
    rng = np.random.default_rng(seed)
    pick_rows = rng.integers(len(used), size=(resamples, len(used)))
    pick_seeds = rng.integers(len(seeds), size=(resamples, len(seeds)))
    drawn = errors[pick_rows[:, :, None], pick_seeds[:, None, :]]  # resample x row x seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with no run at the drawn seeds: NaN, dropped
        means = np.nanmean(drawn, axis=2)
    chunk = max(1, 2_000_000 // len(used) ** 2)  # pairwise signs of ~2M pairs at a time
    taus = np.concatenate([tau_b_rows(means[i:i + chunk], reference[pick_rows[i:i + chunk]])
                           for i in range(0, resamples, chunk)])
    taus = taus[~np.isnan(taus)]
    if not len(taus):
        return None
    lo, hi = np.percentile(taus, [2.5, 97.5])
    return float(lo), float(hi)


def tau_b_rows(x, y):
    """Kendall τ-b of each row of x against the same row of y, vectorized: (C - D) / sqrt(pairs not tied in x
    × pairs not tied in y), scipy's formula. A NaN in x drops that entry; NaN where τ is undefined."""
    import numpy as np

    valid = ~np.isnan(x)
    pairs = valid[:, :, None] & valid[:, None, :]
    with np.errstate(invalid="ignore"):
        sx = np.where(pairs, np.sign(x[:, :, None] - x[:, None, :]), 0.0)
    sy = np.where(pairs, np.sign(y[:, :, None] - y[:, None, :]), 0.0)
    num = (sx * sy).sum(axis=(1, 2))
    den = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _cells(row: Row) -> list[str]:
    ours = PENDING if row.mean is None else f"{row.mean:.2f} ± {row.std:.2f} ({len(row.errors)})"
    pp = parse_printed(row.paper_params)
    dparams = f"{(row.params - pp) / pp:+.1%}" if pp and row.params else "—"
    derr = f"{row.mean - row.paper_error:+.2f}" if row.mean is not None and row.paper_error is not None else "—"
    flops = "—" if row.flops is None else f"{row.flops / 1e9:.2f}G"
    return [row.label, like_printed(row.params, row.paper_params), flops, ours, row.paper_params or "—",
            "—" if row.paper_error is None else f"{row.paper_error:.2f}", dparams, derr]


HEADER = ["row", "params", "FLOPs", "error % (mean ± std, n)", "paper params", "paper error %",
          "Δ params (vs printed)", "Δ error"]


def _seeds_of(row: Row) -> tuple[int, ...]:
    """The seed of each of the row's errors (0, 1, … in order when the row does not say)."""
    return row.seeds if len(row.seeds) == len(row.errors) else tuple(range(len(row.errors)))


def tau_line(rows: list[Row], interval: tuple[float, float] | None = None) -> str:
    """'Kendall τ = 0.69 (n = 10 rows); bootstrap 95% interval [0.42, 0.87] …' or why there is none."""
    tau, n = kendall(rows)
    if tau is None:
        return f"Kendall τ: n/a (n = {n} rows with both our and the paper's error)"
    seeds = len({s for r in rows if r.mean is not None and r.paper_error is not None for s in _seeds_of(r)})
    what = "our seed-mean error ranking" if seeds > 1 else "our error ranking"
    line = f"Kendall τ ({what} vs the paper's) = {tau:.2f} (n = {n} rows)"
    if interval:
        line += (f"; bootstrap 95% interval [{interval[0]:.2f}, {interval[1]:.2f}] ({RESAMPLES} resamples of "
                 f"the {seeds} seed{'s' if seeds != 1 else ''} and the rows)")
    return line


def render_md(title: str, rows: list[Row], notes: list[str], interval: tuple[float, float] | None = None) -> str:
    """Markdown table with notes and the τ line."""
    lines = [f"### {title}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes + [tau_line(rows, interval)]]) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("τ", r"$\tau$"), ("—", "--"), ("~", r"$\sim$")):
        text = text.replace(a, b)
    return text


def render_tex(title: str, rows: list[Row], notes: list[str], interval: tuple[float, float] | None = None) -> str:
    """A LaTeX tabular (booktabs) with the caption holding the notes and τ."""
    body = [" & ".join(_tex(c) for c in _cells(r)) + r" \\" for r in rows]
    caption = _tex(" ".join([title + "."] + notes + [tau_line(rows, interval) + "."]))
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(HEADER) - 1) + "}",
                      r"\toprule", " & ".join(_tex(h) for h in HEADER) + r" \\", r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}", ""])


def render_csv(rows: list[Row], interval: tuple[float, float] | None = None) -> str:
    """One line per row: raw numbers, empty where pending or absent; τ, its interval and τ per seed (the
    table's, the same on every line) at the end."""
    tau, _ = kendall(rows)
    lo, hi = ("", "") if interval is None else (f"{interval[0]:.4f}", f"{interval[1]:.4f}")
    table_cols = ["" if tau is None else f"{tau:.4f}", lo, hi,
                  " ".join(f"{s}:{t:.4f}" for s, t in seed_taus(rows).items())]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "params", "flops", "error_mean", "error_std", "n", "errors", "seeds", "paper_params",
                "paper_error", "tau", "tau_lo", "tau_hi", "tau_by_seed"])
    for r in rows:
        w.writerow([r.label, r.params or "", r.flops or "", "" if r.mean is None else f"{r.mean:.4f}",
                    "" if r.mean is None else f"{r.std:.4f}", len(r.errors), " ".join(f"{e:.4f}" for e in r.errors),
                    " ".join(str(s) for s in _seeds_of(r)), r.paper_params or "",
                    "" if r.paper_error is None else r.paper_error, *table_cols])
    return buf.getvalue()
