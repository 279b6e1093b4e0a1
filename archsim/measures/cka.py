"""Linear centred kernel alignment of representations (Kornblith et al., 2019).

Feature matrices may be memory maps of cache entries larger than memory (a
ResNet-50 has 8 KiB of features per ImageNet image): every function here reads
them a chunk of rows at a time and holds no more than a chunk of two models and
their d_a x d_b cross-covariance.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from tqdm.auto import tqdm

CHUNK_BYTES = 1 << 24
"""Float64 bytes of one model's rows read at a time: 1,024 rows of a ResNet-50's 2,048 features,
enough for the products to run at full BLAS speed; at most four such chunks are alive at once."""


def _blocks(*features: np.ndarray) -> Iterator[slice]:
    """Consecutive row slices of the (equally long) ``features``, CHUNK_BYTES of the widest at a time."""
    width = max(int(np.prod(f.shape[1:], dtype=np.int64)) for f in features)
    step = max(1, CHUNK_BYTES // (8 * max(1, width)))
    for start in range(0, len(features[0]), step):
        yield slice(start, start + step)


def _rows(features: np.ndarray, rows: slice) -> np.ndarray:
    block = np.asarray(features[rows], dtype=np.float64)
    return block.reshape(len(block), -1)


def _array(features: np.ndarray) -> np.ndarray:
    """Arrays and memory maps as they are (no rows read); anything else array-like converted."""
    return features if isinstance(features, np.ndarray) else np.asarray(features)


def _check_rows(features: np.ndarray, length: int, weights: np.ndarray | None) -> None:
    if len(features) != length:
        raise ValueError(f"feature matrices must share their rows (inputs): {len(features)} against {length}")
    if weights is not None and (weights.shape != (length,) or (weights < 0).any() or weights.sum() <= 0):
        raise ValueError(f"weights must be {length} non-negative numbers, not all zero")


def _mean(features: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    total = 0.0
    for rows in _blocks(features):
        block = _rows(features, rows)
        total = total + (block.sum(0) if weights is None else weights[rows] @ block)
    return total / (len(features) if weights is None else weights.sum())


def _centred_cross(
    x: np.ndarray, y: np.ndarray, mean_x: np.ndarray, mean_y: np.ndarray, weights: np.ndarray | None
) -> np.ndarray:
    """(X - mean_x)^T W (Y - mean_y), W the diagonal of ``weights`` (the identity if None).

    Centred chunk by chunk with the means found first, as the in-memory formula
    centres; expanding X^T W Y - n mean_x mean_y^T would cancel digits instead.
    """
    cross = np.zeros((mean_x.size, mean_y.size))
    for rows in _blocks(x, y):
        w = None if weights is None else weights[rows]
        keep = slice(None) if w is None or w.all() else w > 0  # bootstrap draws leave rows out: skip them
        a = _rows(x, rows)[keep] - mean_x
        b = a if y is x else _rows(y, rows)[keep] - mean_y
        cross += a.T @ (b if w is None else b * w[keep, None])
        del a, b  # else this chunk stays alive while the next one is read
    return cross


def linear_cka(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """CKA of two [M, ...] feature matrices on the same M inputs (widths may differ).

    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred features: the
    feature-space form, whose cost grows with the widths, not with M^2.

    Parameters
    ----------
    x, y : array_like, [M, ...]
        Features (arrays or memory maps); each row is flattened.
    weights : ndarray of shape (M,), optional
        How often each input counts: the CKA of ``x[index], y[index]`` for a bootstrap
        ``index`` equals that of ``x, y`` with ``weights=np.bincount(index, minlength=M)``,
        without building the resampled matrices.
    """
    x, y = _array(x), _array(y)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    _check_rows(y, len(x), w)
    mean_x, mean_y = _mean(x, w), _mean(y, w)
    cross = np.linalg.norm(_centred_cross(x, y, mean_x, mean_y, w)) ** 2
    return float(
        cross
        / (
            np.linalg.norm(_centred_cross(x, x, mean_x, mean_x, w))
            * np.linalg.norm(_centred_cross(y, y, mean_y, mean_y, w))
        )
    )


def cka_matrix(features: list[np.ndarray]) -> np.ndarray:
    """N x N linear CKA between every pair of models' [M, ...] features (arrays or memory maps)."""
    features = [_array(f) for f in features]
    n = len(features)
    for f in features[1:]:
        _check_rows(f, len(features[0]), None)
    means = [_mean(f, None) for f in features]
    self_norms = [np.linalg.norm(_centred_cross(f, f, m, m, None)) for f, m in zip(features, means, strict=True)]
    out = np.eye(n)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in tqdm(pairs, desc="CKA", unit="pair", leave=False, disable=None):
        cross = np.linalg.norm(_centred_cross(features[j], features[i], means[j], means[i], None)) ** 2
        out[i, j] = out[j, i] = cross / (self_norms[i] * self_norms[j])
    return out
