"""How stable the spectral clusters are when some models are left out."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from archsim.analysis.clustering import spectral_clusters

MAX_RESTARTS = 2_000
"""K-means restarts of each reclustering at most: some resamples of the published matrix took 14,000 restarts to
find their lowest objective 5 times (5 s each); 2,000 bound a replicate to about 0.7 s."""


def cluster_stability(
    sat: pd.DataFrame,
    labels: pd.Series,
    k: int,
    n_resamples: int = 30,
    keep: float = 0.8,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.Series]:
    """Recluster random ``keep`` shares of the models with the same k.

    Returns the per-replicate adjusted Rand index against the full clustering
    (restricted to the kept models), and per model the mean Jaccard overlap of its
    cluster-mates in the full and the resampled clustering (1 = always with the
    same models).
    """
    rng = np.random.default_rng(seed)
    names = np.asarray(sat.index)
    n = len(names)
    size = max(int(round(keep * n)), k + 1)
    full = labels.to_numpy()
    overlap_sum, overlap_count = np.zeros(n), np.zeros(n)
    rows = []
    for replicate in range(n_resamples):
        kept = np.sort(rng.choice(n, size=size, replace=False))
        sub = spectral_clusters(sat.iloc[kept, kept], k=k, seed=seed, max_restarts=MAX_RESTARTS).labels.to_numpy()
        rows.append({"replicate": replicate, "models": size, "ari": adjusted_rand_score(full[kept], sub)})
        same_full = full[kept][:, None] == full[kept][None, :]
        same_sub = sub[:, None] == sub[None, :]
        jaccard = (same_full & same_sub).sum(1) / (same_full | same_sub).sum(1)
        overlap_sum[kept] += jaccard
        overlap_count[kept] += 1
    per_model = pd.Series(
        np.where(overlap_count > 0, overlap_sum / np.maximum(overlap_count, 1), np.nan), index=names, name="stability"
    )
    return pd.DataFrame(rows), per_model
