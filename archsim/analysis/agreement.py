"""How far SAT matrices computed differently (other attacks, other settings, another lab) agree."""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from archsim.errors import ArchsimError


def off_diagonal(matrix: pd.DataFrame) -> np.ndarray:
    """The upper-triangle entries (each unordered pair once)."""
    i, j = np.triu_indices(len(matrix), k=1)
    return matrix.to_numpy(dtype=float)[i, j]


def matrix_correlations(matrices: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Pearson and Spearman correlation (with p-values) of the off-diagonal entries, every pair of matrices.

    All matrices must list the same models (at least 3) in the same order; pairs with a
    NaN entry in either matrix are left out of that comparison. Where fewer than 3 pairs
    are left, or one side is constant, the correlation is undefined: NaN, with a warning.
    """
    names = list(matrices)
    first = matrices[names[0]]
    for name in names[1:]:
        if list(matrices[name].index) != list(first.index):
            raise ArchsimError(
                f"matrix {name!r} lists other models than {names[0]!r}; compare matrices of the same models"
            )
    if len(first) < 3:
        raise ArchsimError(f"{len(first)} models give fewer than 3 model pairs to correlate; compare at least 3 models")
    rows = []
    for a, b in combinations(names, 2):
        x, y = off_diagonal(matrices[a]), off_diagonal(matrices[b])
        keep = np.isfinite(x) & np.isfinite(y)
        row = {"a": a, "b": b, "pairs": int(keep.sum())}
        if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
            warnings.warn(
                f"{a} and {b}: {int(keep.sum())} model pairs with finite values in both, "
                f"{'constant in one' if keep.sum() >= 3 else 'fewer than 3'}; their correlation is NaN",
                stacklevel=2,
            )
            rows.append({**row, **dict.fromkeys(("pearson", "pearson_p", "spearman", "spearman_p"), np.nan)})
            continue
        pearson, spearman = stats.pearsonr(x[keep], y[keep]), stats.spearmanr(x[keep], y[keep])
        rows.append(
            {
                **row,
                "pearson": float(pearson.statistic),
                "pearson_p": float(pearson.pvalue),
                "spearman": float(spearman.statistic),
                "spearman_p": float(spearman.pvalue),
            }
        )
    return pd.DataFrame(rows)


def common_models(matrices: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]]]:
    """Every matrix cut to the models all of them list, in the first matrix's order, and per matrix
    the models of its own that this left out, for the user to see."""
    names = list(matrices)
    shared = [m for m in matrices[names[0]].index if all(m in matrices[n].index for n in names[1:])]
    if len(shared) < 3:
        raise ArchsimError(
            f"the matrices share {len(shared)} model name(s) ({', '.join(shared) or 'none'}); at least 3 are needed. "
            "Models match by their names in the CSV header: give runs matching names with ,name=DISPLAY"
        )
    left_out = {n: [m for m in matrices[n].index if m not in shared] for n in names}
    return {n: matrices[n].loc[shared, shared] for n in names}, left_out


def compare_matrices(
    matrices: dict[str, pd.DataFrame],
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, list[str]]]:
    """:func:`matrix_correlations` of the matrices on their :func:`common_models`, with the mean
    difference (b minus a) and mean absolute difference of the off-diagonal entries, which the
    correlations do not see: two matrices can rank pairs alike on shifted scales (another eps)."""
    aligned, left_out = common_models(matrices)
    table = matrix_correlations(aligned)
    differences = [off_diagonal(aligned[row.b]) - off_diagonal(aligned[row.a]) for row in table.itertuples()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs: NaN, as their correlation
        table["mean_difference"] = [float(np.nanmean(d)) for d in differences]
        table["mean_abs_difference"] = [float(np.nanmean(np.abs(d))) for d in differences]
    return table, aligned, left_out
