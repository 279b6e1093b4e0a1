"""How far SAT matrices computed differently (other attacks, other settings) agree."""

from __future__ import annotations

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

    All matrices must list the same models in the same order; pairs with a NaN entry
    in either matrix are left out of that comparison.
    """
    names = list(matrices)
    first = matrices[names[0]]
    for name in names[1:]:
        if list(matrices[name].index) != list(first.index):
            raise ArchsimError(f"matrix {name!r} lists other models than {names[0]!r}; compare matrices of the same models")
    rows = []
    for a, b in combinations(names, 2):
        x, y = off_diagonal(matrices[a]), off_diagonal(matrices[b])
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.sum() < 3:
            raise ArchsimError("fewer than 3 model pairs to correlate; compare at least 3 models")
        pearson, spearman = stats.pearsonr(x[keep], y[keep]), stats.spearmanr(x[keep], y[keep])
        rows.append({
            "a": a, "b": b, "pairs": int(keep.sum()),
            "pearson": float(pearson.statistic), "pearson_p": float(pearson.pvalue),
            "spearman": float(spearman.statistic), "spearman_p": float(spearman.pvalue),
        })
    return pd.DataFrame(rows)
