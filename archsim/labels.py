"""Predicted class labels as compact integer arrays: numpy only, so statistics on predictions load no torch."""

from __future__ import annotations

import numpy as np


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Class indices in int16 where they fit (up to 32,767 classes), else int32: a quarter of
    numpy's int64 for results of sources x targets x images."""
    return labels.astype(np.int16 if labels.size == 0 or labels.max() < 2**15 else np.int32, copy=False)


def predicted_labels(logits: np.ndarray) -> np.ndarray:
    """Compact argmax over the classes of [models, images, classes] logits, a model at a time:
    numpy's argmax first copies a read-only (memory-mapped) array whole."""
    return compact_labels(np.stack([rows.argmax(-1) for rows in logits]))
