"""Spectral clustering of a SAT matrix (SPEC §2.3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist, squareform
from sklearn.cluster import KMeans

from archsim.errors import ArchsimError, ParameterError


@dataclass
class SpectralResult:
    labels: pd.Series
    features: np.ndarray
    eigenvalues: np.ndarray
    k: int

    def ordered_distances(self) -> pd.DataFrame:
        """Pairwise distances of the spectral features, models ordered by cluster (block-diagonal picture)."""
        order = np.argsort(self.labels.to_numpy(), kind="stable")
        names = self.labels.index[order]
        return pd.DataFrame(squareform(pdist(self.features[order])), index=names, columns=names)


def spectral_clusters(sat: pd.DataFrame, k: int | None = None, n_init: int = 100, seed: int = 0) -> SpectralResult:
    """Cluster models with affinity W = SAT between distinct models.

    The normalised spectral clustering of Ng, Jordan and Weiss (NIPS 2001), as von
    Luxburg's tutorial (Statistics and Computing, 2007, section 4) states it: W without
    its diagonal (a graph has no self-loops; a SAT matrix's diagonal, about 4.6, is its
    largest entry and would dominate the degrees), normalised affinity D^-1/2 W D^-1/2,
    its k leading eigenvectors as columns, each row scaled to unit length, K-means on
    the rows restarted ``n_init`` times keeping the lowest inertia. The row scaling is
    the step NJW add to the symmetric normalisation: without it a model's row carries
    its degree's D^1/2 factor, so models of low total affinity sit near the origin
    whatever their cluster (von Luxburg, section 8.5). With it, the result is that of
    scikit-learn's ``spectral_embedding`` rows scaled alike, whose own
    Laplacian also ignores the diagonal (tested on the published 69-model matrix).
    ``k=None`` picks k by the largest gap among the leading eigenvalues (2 <= k < N).
    """
    w = sat.to_numpy(dtype=float).copy()
    n = len(w)
    np.fill_diagonal(w, 0.0)
    undefined = np.argwhere(~np.isfinite(w))
    if len(undefined):
        a, b = sat.index[undefined[0][0]], sat.index[undefined[0][1]]
        raise ArchsimError(
            f"SAT of {a} and {b} is undefined (no image both classify correctly; {len(undefined) // 2} such pairs); "
            "cluster models that classify a shared part of the images, or use more images"
        )
    if (w < 0).any():
        raise ArchsimError(
            "the SAT matrix has negative entries; affinities must be >= 0 (use eps_s >= 1, i.e. SAT >= 0)"
        )
    if k is not None and not 2 <= k <= n:
        raise ParameterError("k", f"{k} must lie between 2 and the {n} models")
    degree = w.sum(1)
    if (degree <= 0).any():
        raise ArchsimError("a model has zero affinity to every other model; it cannot be clustered")
    scale = 1.0 / np.sqrt(degree)
    normalised = w * scale[:, None] * scale[None, :]
    eigenvalues, eigenvectors = np.linalg.eigh(normalised)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    if k is None:
        gaps = eigenvalues[1 : n - 1] - eigenvalues[2:n]  # gap after the j-th value, j = 2..n-1
        k = int(np.argmax(gaps)) + 2 if len(gaps) else 2
    features = eigenvectors[:, :k]
    # Eigenvector signs are arbitrary; fix them so results are reproducible across LAPACK builds.
    features = features * np.where(features[np.abs(features).argmax(0), range(k)] < 0, -1.0, 1.0)
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), np.finfo(float).tiny)
    labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(features)
    return SpectralResult(pd.Series(labels, index=sat.index, name="cluster"), features, eigenvalues, k)
