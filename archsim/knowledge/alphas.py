"""Liang et al.'s adversarial-transferability metrics (docs/method.md#knowledge) from output deviations.

A deviation is the change of a model's output under an attack: ``delta_st[i]`` is
the target's output change on item i under the source's attack, and so on. The
two models' outputs may have different sizes: alpha_2 is the norm of a mean
outer product, which needs no common dimension.
"""

from __future__ import annotations

import numpy as np


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows (the last axis) scaled to unit length; zero rows stay zero (they carry no direction)."""
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v, dtype=float), where=norms > 0)


def alpha_1(delta_st: np.ndarray, delta_tt: np.ndarray) -> np.ndarray:
    """Per item |Delta_{S->T}| / |Delta_{T->T}|: how far the source's attack moves the target,
    relative to the target's own attack. NaN where the target's own attack moves nothing.

    Parameters
    ----------
    delta_st, delta_tt : arrays [items, d_T]
        Or [..., items, d_T]: several pairs at once, alpha_1 of each (the norm is over the last axis).
    """
    own = np.linalg.norm(delta_tt, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(own > 0, np.linalg.norm(delta_st, axis=-1) / own, np.nan)


def alpha_2(delta_ss: np.ndarray, delta_st: np.ndarray, weights: np.ndarray | None = None) -> float:
    """|| mean_i w_i unit(Delta_{S->S,i}) outer unit(Delta_{S->T,i}) ||_F (unsquared).

    With ``weights = alpha_1`` per item this is the combined score. 1 when every
    item's pair of directions is the same up to one fixed rotation between the two
    output spaces; near 0 when the target's directions are unrelated to the source's.

    Parameters
    ----------
    delta_ss : array [items, d_S]
    delta_st : array [items, d_T]
    weights : array [items], optional
        Items whose weight is NaN (an undefined alpha_1) are left out: of the sum and of
        the count it is divided by, as :func:`alpha_1`'s mean leaves them out.
    """
    u, v = unit_rows(np.asarray(delta_ss, float)), unit_rows(np.asarray(delta_st, float))
    w = np.ones(len(u)) if weights is None else np.asarray(weights, float)
    keep = np.isfinite(w)
    mean_outer = np.einsum("i,ia,ib->ab", w[keep], u[keep], v[keep]) / max(int(keep.sum()), 1)
    return float(np.linalg.norm(mean_outer))
