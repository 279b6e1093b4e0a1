"""Spectral clustering of a SAT matrix (docs/method.md#analysis)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import adjusted_rand_score

from archsim.errors import ArchsimError, ParameterError

ROUND = 100
"""K-means restarts are run in rounds of this many."""

MIN_HITS = 5
"""Restarts go on until the lowest objective found has been reached this many times (the rule of
:func:`kmeans_restarts`)."""

MAX_RESTARTS = 20_000
"""Restarts stop here whether or not the lowest objective was reached :data:`MIN_HITS` times (said in the result)."""


@dataclass(frozen=True)
class KMeansSearch:
    """How firm a K-means partition is: ``restarts`` run, ``hits`` of them reaching the lowest ``inertia`` (within
    1e-9 of it, relative), and the best partition that differs from it (``runner_up_inertia``, NaN if every restart
    found the same partition; ``runner_up_ari``, its adjusted Rand index against the chosen one)."""

    restarts: int
    hits: int
    inertia: float
    runner_up_inertia: float
    runner_up_ari: float
    max_restarts: int = MAX_RESTARTS

    @property
    def settled(self) -> bool:
        """Whether the lowest objective was reached :data:`MIN_HITS` times before the search's cap."""
        return self.hits >= MIN_HITS

    def describe(self) -> str:
        """One line for a report or a terminal."""
        line = f"K-means: the lowest objective {self.inertia:.4f} reached by {self.hits} of {self.restarts} restarts"
        if np.isnan(self.runner_up_inertia):
            return line + "; every restart found the same partition"
        gap = self.runner_up_inertia - self.inertia
        line += (
            f"; the next-best partition {self.runner_up_inertia:.4f} (+{gap:.4f}, {100 * gap / self.inertia:.2f} %), "
            f"ARI {self.runner_up_ari:.3f} against it"
        )
        if self.settled:
            return line
        return line + f" (not settled within {self.max_restarts} restarts: treat it as tentative)"


@dataclass
class SpectralResult:
    labels: pd.Series
    features: np.ndarray
    eigenvalues: np.ndarray
    k: int
    search: KMeansSearch

    def ordered_distances(self) -> pd.DataFrame:
        """Pairwise distances of the spectral features, models ordered by cluster (block-diagonal picture)."""
        order = np.argsort(self.labels.to_numpy(), kind="stable")
        names = self.labels.index[order]
        return pd.DataFrame(squareform(pdist(self.features[order])), index=names, columns=names)


def spectral_clusters(
    sat: pd.DataFrame, k: int | None = None, seed: int = 0, *, max_restarts: int = MAX_RESTARTS
) -> SpectralResult:
    """Cluster models with affinity W = SAT between distinct models.

    The normalised spectral clustering of Ng, Jordan and Weiss (NIPS 2001), as von
    Luxburg's tutorial (Statistics and Computing, 2007, section 4) states it: W without
    its diagonal (a graph has no self-loops; a SAT matrix's diagonal, about 4.6, is its
    largest entry and would dominate the degrees), normalised affinity D^-1/2 W D^-1/2,
    its k leading eigenvectors as columns, each row scaled to unit length, K-means on
    the rows (:func:`kmeans_restarts`: restarted until its lowest objective has been
    reached several times, so the partition does not depend on ``seed``). The row scaling is
    the step NJW add to the symmetric normalisation: without it a model's row carries
    its degree's D^1/2 factor, so models of low total affinity sit near the origin
    whatever their cluster (von Luxburg, section 8.5). With it, the result is that of
    scikit-learn's ``spectral_embedding`` rows scaled alike, whose own
    Laplacian also ignores the diagonal (tested on the published 69-model matrix).
    ``k=None`` picks k by the largest gap among the leading eigenvalues (2 <= k < N).
    Clusters are numbered in the order their first model appears in ``sat``.
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
    labels, search = kmeans_restarts(features, k, seed=seed, max_restarts=max_restarts)
    return SpectralResult(pd.Series(labels, index=sat.index, name="cluster"), features, eigenvalues, k, search)


def kmeans_restarts(
    points: np.ndarray, k: int, seed: int = 0, *, max_restarts: int = MAX_RESTARTS
) -> tuple[np.ndarray, KMeansSearch]:
    """K-means (k-means++ starts, Lloyd's iterations) restarted until the lowest objective found has been reached
    :data:`MIN_HITS` times, in rounds of :data:`ROUND`, at most ``max_restarts``.

    A fixed number of restarts leaves the partition to the seed where the best one is rare: on the SAT paper's
    69-model matrix at k = 10 about 1 restart in 100 finds it, and 100 restarts missed it for 2 seeds in 5. Requiring
    several hits makes the result the same for every seed wherever the optimum is not vanishingly rare. Labels are
    renumbered in order of first appearance, so equal partitions have equal labels.

    Written here rather than calling scikit-learn's ``KMeans`` once per restart: thousands of restarts on a few dozen
    points are all interpreter overhead there (about 4 ms a fit), while one vectorised pass over every restart of a
    round takes about as long as one fit. The tests check it against ``KMeans`` from the same starts.
    """
    points = np.asarray(points, dtype=float)
    rng = np.random.default_rng(seed)
    found_labels, found_inertia = [], []
    while True:
        starts = kmeans_plusplus_starts(points, k, ROUND, rng)
        labels, inertia = lloyd(points, starts)
        found_labels.append(labels)
        found_inertia.append(inertia)
        inertia_all = np.concatenate(found_inertia)
        best = inertia_all.min()
        hits = int((inertia_all <= best * (1 + 1e-9) + 1e-12).sum())
        if hits >= MIN_HITS or len(inertia_all) >= max_restarts:
            break
    labels_all = np.concatenate(found_labels)
    chosen = canonical_labels(labels_all[int(inertia_all.argmin())])
    differs = np.array([not np.array_equal(canonical_labels(row), chosen) for row in labels_all])
    if differs.any():
        runner = int(np.flatnonzero(differs)[inertia_all[differs].argmin()])
        runner_up, runner_ari = float(inertia_all[runner]), float(adjusted_rand_score(chosen, labels_all[runner]))
    else:
        runner_up, runner_ari = float("nan"), float("nan")
    return chosen, KMeansSearch(len(inertia_all), hits, float(best), runner_up, runner_ari, max_restarts)


def kmeans_plusplus_starts(points: np.ndarray, k: int, restarts: int, rng: np.random.Generator) -> np.ndarray:
    """``restarts`` sets of k starting centres [restarts, k, d] by k-means++ (Arthur and Vassilvitskii, 2007): the
    first a uniformly drawn point, each next one a point drawn with probability proportional to its squared distance
    to the nearest centre chosen so far."""
    n = len(points)
    chosen = np.empty((restarts, k), dtype=int)
    chosen[:, 0] = rng.integers(n, size=restarts)
    nearest = ((points[None] - points[chosen[:, 0]][:, None]) ** 2).sum(-1)  # [restarts, n]
    for c in range(1, k):
        weights = np.maximum(nearest, 0.0)
        totals = weights.sum(1, keepdims=True)
        # Every point already a centre (duplicates): draw uniformly among all.
        weights = np.where(totals > 0, weights, 1.0)
        cumulative = np.cumsum(weights, 1)
        draws = rng.random(restarts)[:, None] * cumulative[:, -1:]
        chosen[:, c] = np.minimum((cumulative <= draws).sum(1), n - 1)
        distance = ((points[None] - points[chosen[:, c]][:, None]) ** 2).sum(-1)
        nearest = np.minimum(nearest, distance)
    return points[chosen]


def lloyd(points: np.ndarray, centres: np.ndarray, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's iterations from each start at once: labels [restarts, n] and inertia [restarts] (the sum of squared
    distances to the assigned centres) once no label changes. A cluster that empties keeps its centre."""
    centres = centres.copy()
    restarts, k, _ = centres.shape
    labels = np.full((restarts, len(points)), -1)
    for _ in range(max_iter):
        distance = ((points[None, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)  # [restarts, n, k]
        new = distance.argmin(-1)
        if np.array_equal(new, labels):
            break
        labels = new
        members = np.eye(k)[labels]  # [restarts, n, k]
        counts = members.sum(1)  # [restarts, k]
        sums = np.einsum("rnk,nd->rkd", members, points)
        centres = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], centres)
    distance = ((points[None, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)
    labels = distance.argmin(-1)
    return labels, np.take_along_axis(distance, labels[..., None], -1)[..., 0].sum(1)


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Cluster labels renumbered 0, 1, ... in order of first appearance."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    return order[np.searchsorted(np.unique(labels), labels)]
