"""Linear centred kernel alignment of representations (Kornblith et al., 2019)."""

from __future__ import annotations

import numpy as np


def _centred(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    return features - features.mean(0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA of two [M, d] feature matrices on the same M inputs (widths may differ).

    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred features: the
    feature-space form, whose cost grows with the widths, not with M^2.
    """
    x, y = _centred(x), _centred(y)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def cka_matrix(features: list[np.ndarray]) -> np.ndarray:
    """N x N linear CKA between every pair of models' features."""
    n = len(features)
    centred = [_centred(f) for f in features]
    self_norms = [np.linalg.norm(c.T @ c) for c in centred]
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = np.linalg.norm(centred[j].T @ centred[i]) ** 2 / (self_norms[i] * self_norms[j])
    return out
