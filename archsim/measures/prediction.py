"""Prediction-based similarity (docs/guide/measures.md): disagreement rate and error consistency."""

from __future__ import annotations

import numpy as np


def disagreement(predictions: np.ndarray) -> np.ndarray:
    """N x N share of images on which two models predict different labels; ``predictions`` is [N, M]."""
    predictions = np.asarray(predictions)
    return (predictions[:, None, :] != predictions[None, :, :]).mean(-1)


def error_consistency(correct: np.ndarray) -> np.ndarray:
    """N x N Cohen's kappa of the correct/wrong patterns (Geirhos et al., 2020).

    kappa = (c_obs - c_exp) / (1 - c_exp), c_obs the share of images both get right
    or both get wrong, c_exp = p_a p_b + (1 - p_a)(1 - p_b) from the accuracies.
    NaN where c_exp is 1 (both models always right, or both always wrong).
    """
    correct = np.asarray(correct, dtype=np.float64)
    observed = (correct @ correct.T + (1 - correct) @ (1 - correct).T) / correct.shape[1]
    p = correct.mean(1)
    expected = np.outer(p, p) + np.outer(1 - p, 1 - p)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)
