"""The measures comparison (docs/guide/measures.md): each measure's spread at matched compute, its cost, and how it
tracks SAT and ensemble gains."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats

from archsim.labels import predicted_labels


def ensemble_err(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """N x N error reduction rate of logit-averaged 2-ensembles, 1 - Err(ens) / mean(Err(a), Err(b));
    NaN where both members make no error."""
    error = (predicted_labels(logits) != labels[None]).mean(1)
    n = len(logits)
    out = np.full((n, n), np.nan)
    for a in range(n):
        for b in range(a + 1, n):
            mean_error = (error[a] + error[b]) / 2
            if mean_error > 0:
                ensemble = ((logits[a] + logits[b]) / 2).argmax(-1) != labels
                out[a, b] = out[b, a] = 1 - ensemble.mean() / mean_error
    return out


def _upper(matrix: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(matrix), k=1)
    return np.asarray(matrix, dtype=float)[i, j]


def correlate(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return {"spearman": np.nan, "spearman_p": np.nan, "pearson": np.nan, "pearson_p": np.nan}
    s, p = stats.spearmanr(x[keep], y[keep]), stats.pearsonr(x[keep], y[keep])
    return {
        "spearman": float(s.statistic),
        "spearman_p": float(s.pvalue),
        "pearson": float(p.statistic),
        "pearson_p": float(p.pvalue),
    }


def partial_correlate(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of ``x`` and ``y`` given ``z``: each residualised on ``z`` by least squares
    (Spearman on ranks), the residuals correlated, and the p-value from Student's t with n - 3 degrees of freedom
    (one more parameter than a plain correlation). Whether x still goes with y once z is accounted for."""
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z = (np.asarray(v, dtype=float)[keep] for v in (x, y, z))
    out = {"spearman": np.nan, "spearman_p": np.nan, "pearson": np.nan, "pearson_p": np.nan}
    if len(x) < 4 or min(np.ptp(x), np.ptp(y), np.ptp(z)) == 0:
        return out
    for name, (a, b, c) in (("pearson", (x, y, z)), ("spearman", tuple(stats.rankdata(v) for v in (x, y, z)))):
        design = np.column_stack([np.ones_like(c), c])
        residual_a = a - design @ np.linalg.lstsq(design, a, rcond=None)[0]
        residual_b = b - design @ np.linalg.lstsq(design, b, rcond=None)[0]
        scale = np.linalg.norm(residual_a) * np.linalg.norm(residual_b)
        if scale == 0:
            continue
        r = float(np.clip(residual_a @ residual_b / scale, -1, 1))
        dof = len(x) - 3
        t = r * np.sqrt(dof / max(1 - r * r, np.finfo(float).tiny))
        out[name], out[f"{name}_p"] = r, float(2 * stats.t.sf(abs(t), dof))
    return out


COMPARISON_COLUMNS = (
    "measure",
    "passes_per_item",
    "items_at_budget",
    "noise_to_signal",
    "spearman_vs_sat",
    "spearman_vs_err",
    "pearson_vs_err",
)
"""The columns of the comparison table that the CLI and the report show."""


def compare_measures(
    matrices: dict[str, np.ndarray],
    resample: dict[str, Callable[[np.ndarray], float]],
    pool_sizes: dict[str, int],
    costs: dict[str, float],
    err: np.ndarray,
    budget: float,
    n_resamples: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per measure.

    ``resample[m](index)`` gives measure m's value for the chosen pair on the items
    ``index`` (drawn with replacement from its ``pool_sizes[m]`` items); ``costs[m]`` is
    its forward+backward passes per item for one pair, so ``budget / costs[m]`` items
    match the compute of the others. ``noise_to_signal`` divides the spread over
    resamples by the spread of the measure across all pairs: comparable across scales.
    ``matrices`` must include ``sat``.
    """
    rng = np.random.default_rng([seed, 5])
    sat = _upper(matrices["sat"])
    rows = []
    for name, matrix in matrices.items():
        values = _upper(matrix)
        items = max(1, int(round(budget / costs[name])))
        draws = [resample[name](rng.integers(0, pool_sizes[name], size=items)) for _ in range(n_resamples)]
        spread = float(np.nanstd(draws))
        signal = float(np.nanstd(values))
        row: dict[str, Any] = {
            "measure": name,
            "passes_per_item": costs[name],
            "items_at_budget": items,
            "spread_sd": spread,
            "across_pairs_sd": signal,
            "noise_to_signal": spread / signal if signal > 0 else np.nan,
        }
        row.update({f"{k}_vs_sat": v for k, v in correlate(values, sat).items() if k.startswith("spearman")})
        row.update({f"{k}_vs_err": v for k, v in correlate(values, _upper(err)).items()})
        rows.append(row)
    return pd.DataFrame(rows)
