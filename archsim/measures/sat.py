"""SAT (docs/method.md#sat): similarity by attack transferability, with bootstrap intervals."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_EPS_S = 1.0
"""Floor of the fooling percentage: 1 % keeps SAT >= ln(1) = 0, as spectral clustering needs."""

BOOTSTRAP_CHUNK_BYTES = 1 << 24
"""Float64 bytes of the pair masks cast at a time by the bootstrap."""


def sat_value(
    fooled: float | np.ndarray, both_correct: float | np.ndarray, eps_s: float = DEFAULT_EPS_S, sides: int = 2
) -> np.ndarray:
    """``ln(max(eps_s, 100 * fooled / (sides * |X_AB|)))``; NaN where ``|X_AB|`` is 0.

    ``fooled`` counts fooled decisions over X_AB: both directions for the
    symmetric score (``sides=2``), one for the one-sided score (``sides=1``).
    """
    fooled = np.asarray(fooled, dtype=np.float64)
    both_correct = np.asarray(both_correct, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        percent = np.where(both_correct > 0, 100.0 * fooled / (sides * both_correct), np.nan)
    return np.log(np.maximum(eps_s, percent))


@dataclass
class SatTables:
    """SAT of every pair from a run's predictions.

    ``sat`` is the symmetric N x N matrix; ``pairs`` has one row per ordered
    pair (source, target).
    """

    sat: pd.DataFrame
    one_sided: pd.DataFrame
    pairs: pd.DataFrame


def sat_tables(
    names: list[str],
    clean_correct: np.ndarray,
    adv_wrong: np.ndarray,
    eps_s: float = DEFAULT_EPS_S,
    n_boot: int = 1000,
    seed: int = 0,
) -> SatTables:
    """SAT, one-sided SAT and their 95 % bootstrap intervals over images.

    Parameters
    ----------
    names : list of str
        Model names, N.
    clean_correct : bool array [N, M]
        Whether model n classifies clean image m correctly.
    adv_wrong : bool array [N, N, M]
        ``adv_wrong[s, t, m]``: target t misclassifies source s's adversarial image m.
    eps_s : float
        Floor of the percentage (see :data:`DEFAULT_EPS_S`).
    n_boot : int
        Bootstrap replicates (images resampled with replacement); 0 disables.
    seed : int
        Seed of the resampling.
    """
    clean_correct = np.asarray(clean_correct, dtype=bool)
    adv_wrong = np.asarray(adv_wrong, dtype=bool)
    n, m = clean_correct.shape
    if adv_wrong.shape != (n, n, m):
        raise ValueError(f"adv_wrong must be [{n}, {n}, {m}], got {adv_wrong.shape}")
    both = clean_correct[:, None, :] & clean_correct[None, :, :]  # [s, t, m], symmetric in s, t
    fooled = both & adv_wrong  # target t fooled by source s, on X_st
    count = both.sum(-1)
    fooled_count = fooled.sum(-1)
    sym = sat_value(fooled_count + fooled_count.T, count, eps_s, sides=2)
    one = sat_value(fooled_count, count, eps_s, sides=1)
    if (count == 0).any():
        warnings.warn("some pairs share no clean-correct image; their SAT is NaN", stacklevel=2)

    low_sym = high_sym = low_one = high_one = np.full((n, n), np.nan)
    if n_boot > 0:
        # Resampling images = integer weights per image; one matmul per chunk of images serves every pair.
        # Chunks keep the float copies of the [N, N, M] masks small (whole, 1.9 GB each for 69 models on
        # 50,000 images); the sums are of integers, exact in any order, so chunking changes no digit.
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot)
        boot_count, boot_fooled = np.zeros((n_boot, n * n)), np.zeros((n_boot, n * n))
        step = max(1, BOOTSTRAP_CHUNK_BYTES // (8 * n * n))
        for start in range(0, m, step):
            chunk = slice(start, start + step)
            w = weights[:, chunk].astype(np.float64)
            boot_count += w @ both[:, :, chunk].reshape(n * n, -1).T
            boot_fooled += w @ fooled[:, :, chunk].reshape(n * n, -1).T
        boot_count, boot_fooled = boot_count.reshape(n_boot, n, n), boot_fooled.reshape(n_boot, n, n)
        boot_sym = sat_value(boot_fooled + boot_fooled.transpose(0, 2, 1), boot_count, eps_s, sides=2)
        boot_one = sat_value(boot_fooled, boot_count, eps_s, sides=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low_sym, high_sym = np.nanpercentile(boot_sym, [2.5, 97.5], axis=0)
            low_one, high_one = np.nanpercentile(boot_one, [2.5, 97.5], axis=0)

    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(count > 0, 100.0 * fooled_count / count, np.nan)
    s_idx, t_idx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    s_idx, t_idx = s_idx.ravel(), t_idx.ravel()
    pairs = pd.DataFrame(
        {
            "source": np.asarray(names)[s_idx],
            "target": np.asarray(names)[t_idx],
            "n_both_correct": count[s_idx, t_idx],
            "fool_rate_source_to_target": rate[s_idx, t_idx],
            "fool_rate_target_to_source": rate[t_idx, s_idx],
            "sat": sym[s_idx, t_idx],
            "sat_low": low_sym[s_idx, t_idx],
            "sat_high": high_sym[s_idx, t_idx],
            "one_sided_sat": one[s_idx, t_idx],
            "one_sided_low": low_one[s_idx, t_idx],
            "one_sided_high": high_one[s_idx, t_idx],
        }
    )
    frame = lambda values: pd.DataFrame(values, index=list(names), columns=list(names))  # noqa: E731
    return SatTables(sat=frame(sym), one_sided=frame(one), pairs=pairs)
