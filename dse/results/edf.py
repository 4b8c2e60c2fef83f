"""Error EDFs of design-space populations (Radosavovic et al. 2019, 2020): the pure math, numpy only.

An error EDF of n trained models is F(e) = sum_i w_i [e_i <= e] (right-continuous; plain: w_i = 1/n).

The complexity-normalized EDF reweights every group so that complexity is matched across groups:
- bins: `n_bins` log-spaced bins over the range of ALL groups' complexities together, [min, max] of every
  trial: edges = min * (max / min)^(k / n_bins) for k = 0..n_bins; a trial is in bin k when
  edges[k] <= c < edges[k+1] (the largest value goes into the last bin). All groups share these edges.
- weights, per group g with k_g occupied bins (bins holding at least one of g's trials): a trial in bin b
  weighs 1 / k_g / n_g(b), n_g(b) being g's trials in b. So each group's weights sum to 1 and every bin
  that a group occupies carries the same weight 1 / k_g in that group. (A bin that only some groups occupy
  keeps its share in those groups: every trained trial counts.)

The KS statistic between two (weighted) EDFs is D = max_x |F_a(x) - F_b(x)|, taken over every error value of
either group (the jump points, where the supremum of two step functions is reached).
"""
from __future__ import annotations

import math

import numpy as np


def log_edges(values, n_bins: int) -> np.ndarray:
    """`n_bins` + 1 log-spaced bin edges over [min, max] of `values` (all > 0)."""
    values = np.asarray(values, dtype=float)
    lo, hi = float(values.min()), float(values.max())
    if lo <= 0:
        raise ValueError(f"log-spaced bins need complexities > 0, got {lo:g}")
    if hi == lo:
        return np.array([lo, lo])
    edges = lo * (hi / lo) ** (np.arange(n_bins + 1) / n_bins)
    edges[-1] = hi
    return edges


def bin_index(values, edges: np.ndarray) -> np.ndarray:
    """The bin of every value (edges[k] <= v < edges[k+1]; the top edge belongs to the last bin). A value
    within 1e-9 (relative) of an edge counts as on it, so rounding in the edges never moves a value down."""
    n_bins = max(1, len(edges) - 1)
    idx = np.searchsorted(edges, np.asarray(values, dtype=float) * (1 + 1e-9), side="right") - 1
    return np.clip(idx, 0, n_bins - 1)


def bin_weights(bins) -> np.ndarray:
    """Weights of one group's trials from their bins: 1 / occupied bins / trials in the trial's bin."""
    bins = np.asarray(bins)
    occupied, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    return 1.0 / len(occupied) / counts[inverse]


def normalized_weights(complexity, groups, n_bins: int, edges: np.ndarray | None = None) -> np.ndarray:
    """Per-trial weights of the normalized EDF (bins shared by all groups; see the module docstring)."""
    complexity = np.asarray(complexity, dtype=float)
    groups = np.asarray(groups)
    edges = log_edges(complexity, n_bins) if edges is None else edges
    bins = bin_index(complexity, edges)
    out = np.zeros(len(complexity))
    for g in np.unique(groups):
        mask = groups == g
        out[mask] = bin_weights(bins[mask])
    return out


def uniform_weights(groups) -> np.ndarray:
    """1 / (trials in the group) for every trial: the plain EDF's weights."""
    groups = np.asarray(groups)
    out = np.zeros(len(groups))
    for g in np.unique(groups):
        mask = groups == g
        out[mask] = 1.0 / mask.sum()
    return out


def edf_at(errors, weights, at) -> np.ndarray:
    """F(x) = sum of the weights of errors <= x, at every x of `at`."""
    errors, weights = np.asarray(errors, dtype=float), np.asarray(weights, dtype=float)
    order = np.argsort(errors, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cum[np.searchsorted(errors[order], np.asarray(at, dtype=float), side="right")]


def ks(errors_a, weights_a, errors_b, weights_b) -> tuple[float, float, float]:
    """(D, x, F_a(x) - F_b(x)) at the error x where the two EDFs differ most (positive: a has more mass at
    low error there, i.e. a looks better)."""
    points = np.union1d(np.asarray(errors_a, dtype=float), np.asarray(errors_b, dtype=float))
    diff = edf_at(errors_a, weights_a, points) - edf_at(errors_b, weights_b, points)
    k = int(np.argmax(np.abs(diff)))
    return float(abs(diff[k])), float(points[k]), float(diff[k])


def effective_n(weights) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 (n for equal weights)."""
    w = np.asarray(weights, dtype=float)
    return float(w.sum() ** 2 / (w ** 2).sum())


def ks_pvalue(d: float, n_a: float, n_b: float) -> float:
    """Asymptotic two-sample KS p-value, P(K > d sqrt(n_a n_b / (n_a + n_b))), Kolmogorov's series."""
    lam = d * math.sqrt(n_a * n_b / (n_a + n_b))
    if lam < 1e-3:
        return 1.0
    total = sum((-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam) for j in range(1, 101))
    return float(min(1.0, max(0.0, 2 * total)))


def bootstrap_band(errors, complexity, edges, grid, normalized: bool, reps: int = 500, seed: int = 0,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise (lo, hi) band of one group's EDF on `grid`: trials resampled with replacement, weights recomputed."""
    errors, complexity = np.asarray(errors, dtype=float), np.asarray(complexity, dtype=float)
    rng = np.random.default_rng(seed)
    n = len(errors)
    bins = bin_index(complexity, edges)
    curves = np.empty((reps, len(grid)))
    for r in range(reps):
        pick = rng.integers(0, n, n)
        w = bin_weights(bins[pick]) if normalized else np.full(n, 1.0 / n)
        curves[r] = edf_at(errors[pick], w, grid)
    alpha = (1 - level) / 2
    return np.quantile(curves, alpha, axis=0), np.quantile(curves, 1 - alpha, axis=0)


def bootstrap_min(errors, fraction: float = 0.25, reps: int = 10_000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """RegNet's empirical-bootstrap estimate of the best error: (mean, lo, hi) of the minimum over `reps`
    resamples (with replacement) of `fraction` of the errors (at least one)."""
    errors = np.asarray(errors, dtype=float)
    k = max(1, int(round(fraction * len(errors))))
    rng = np.random.default_rng(seed)
    mins = errors[rng.integers(0, len(errors), (reps, k))].min(axis=1)
    alpha = (1 - level) / 2
    return float(mins.mean()), float(np.quantile(mins, alpha)), float(np.quantile(mins, 1 - alpha))


# ----- the quantized-linear width rule (Radosavovic et al. 2020), on a net with fixed stages -----
def quantized_widths(w0: float, wa: float, wm: float, starts, quantum: int = 8, low: int = 8,
                     high: int | None = None) -> np.ndarray:
    """Stage widths of the rule: u = w0 + wa * start (the stage's first block index), s = round(log_wm(u / w0)),
    w = w0 * wm^s rounded to a multiple of `quantum`, clipped to [low, high]."""
    starts = np.asarray(starts, dtype=float)
    u = w0 + wa * starts
    s = np.round(np.log(u / w0) / math.log(wm))
    w = np.round(w0 * wm ** s / quantum) * quantum
    return np.clip(w, low, high if high is not None else np.inf)


def fit_quantized_linear(widths, depths, w0_grid=None, wa_grid=None, wm_grid=None, quantum: int = 8,
                         low: int = 8, high: int | None = None) -> dict:
    """Grid-fit (w0, wa, wm) to one net's stage widths, minimizing RegNet's e_fit: the mean over blocks of
    (log w_block - log w_rule)^2, each stage's blocks taking the rule's width at the stage's first block."""
    widths, depths = np.asarray(widths, dtype=float), np.asarray(depths, dtype=int)
    starts = np.concatenate([[0], np.cumsum(depths)[:-1]])
    w0s = np.arange(8, 257, 8.0) if w0_grid is None else np.asarray(w0_grid, dtype=float)
    was = np.arange(0.0, 64.01, 0.5) if wa_grid is None else np.asarray(wa_grid, dtype=float)
    wms = np.arange(1.5, 3.001, 0.05) if wm_grid is None else np.asarray(wm_grid, dtype=float)
    W0, WA, WM = np.meshgrid(w0s, was, wms, indexing="ij")
    u = W0[..., None] + WA[..., None] * starts
    s = np.round(np.log(u / W0[..., None]) / np.log(WM[..., None]))
    w = np.clip(np.round(W0[..., None] * WM[..., None] ** s / quantum) * quantum, low,
                high if high is not None else np.inf)
    err = ((np.log(widths) - np.log(w)) ** 2 * depths).sum(axis=-1) / depths.sum()
    i = np.unravel_index(int(np.argmin(err)), err.shape)
    return {"w0": float(W0[i]), "wa": round(float(WA[i]), 6), "wm": round(float(WM[i]), 6), "e_fit": float(err[i]),
            "widths": [int(x) for x in w[i]]}
