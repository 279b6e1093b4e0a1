"""alpha_1, alpha_2 and their combination (docs/method.md#knowledge) between every pair of a finished run's models.

The attack is the run's own, read from the cache: on images both models classify
correctly the label is each model's own prediction, so the run's untargeted attack
on the label is Liang et al.'s attack on the prediction there, and only those
images are used (the target must be right on them, as in the paper; the source too,
so that Delta_S->S is its attack's effect). Deviations are of the logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from archsim.cache import (
    CacheStore,
    StoredArrays,
    atomic_write_text,
    digest,
)
from archsim.errors import ArchsimError
from archsim.hardware import resolve_device
from archsim.knowledge.alphas import alpha_1, alpha_2, unit_rows
from archsim.models import create_model
from archsim.params import check
from archsim.runs import RunFolder, load_run
from archsim.transfer.batching import batch_size_for
from archsim.transfer.stages import predict_stream

_KERNEL_BLOCK_BYTES = 1 << 26


def _bootstrap_alpha_2(
    u: np.ndarray, v: np.ndarray, weights: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """alpha_2 over image resamples without forming one outer product per resample:
    with resample counts c, |sum_k c_k w_k u_k v_k^T|_F^2 = c^T K c, K = (U U^T) * (V V^T) * (w w^T).

    K is images x images (20 GB for 50,000 images), so it is formed a block of rows at a time.
    """
    m = len(u)
    counts = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot).astype(float)
    quadratic = np.zeros(n_boot)
    block = max(1, _KERNEL_BLOCK_BYTES // (8 * m))
    for start in range(0, m, block):
        rows = slice(start, start + block)
        kernel_rows = (u[rows] @ u.T) * (v[rows] @ v.T) * np.outer(weights[rows], weights)
        quadratic += ((counts[:, rows] @ kernel_rows) * counts).sum(1)
    return np.sqrt(np.maximum(quadratic, 0)) / m


def pair_alphas(
    d_ss: np.ndarray, d_st: np.ndarray, d_tt: np.ndarray, n_boot: int, rng: np.random.Generator
) -> dict[str, float]:
    """alpha_1, alpha_2 and the combined score of one ordered pair, with 95 % bootstrap intervals over its images.

    An image whose target's own attack moves nothing (|Delta_T->T| = 0) has no alpha_1,
    so it is left out of alpha_1 and of the combined score (weighted by alpha_1), in the
    estimate and in every resample alike (:func:`alpha_1`, :func:`alpha_2`); alpha_2
    itself uses every image.
    """
    per_image = alpha_1(d_st, d_tt)
    defined = np.isfinite(per_image)
    row = {
        "alpha_1": float(per_image[defined].mean()) if defined.any() else np.nan,
        "alpha_2": alpha_2(d_ss, d_st) if len(d_ss) else np.nan,
        "alpha_combined": alpha_2(d_ss, d_st, per_image) if defined.any() else np.nan,
    }
    if n_boot > 0 and len(d_ss) > 1:
        u, v = unit_rows(d_ss), unit_rows(d_st)
        m = int(defined.sum())
        resampled = {"alpha_2": _bootstrap_alpha_2(u, v, np.ones(len(u)), n_boot, rng)}
        if m > 1:
            counts = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot)
            resampled["alpha_1"] = counts @ per_image[defined] / m
            resampled["alpha_combined"] = _bootstrap_alpha_2(u[defined], v[defined], per_image[defined], n_boot, rng)
        for name, values in resampled.items():
            row[f"{name}_low"], row[f"{name}_high"] = np.percentile(values, [2.5, 97.5])
    return row


def alpha_matrices(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    n_boot: int = 200,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
) -> dict[str, pd.DataFrame]:
    """``archsim alphas``: N x N matrices (row = source S, column = target T) in the sat.csv layout.

    Writes ``alpha_1.csv`` (mean over images of |Delta_S->T| / |Delta_T->T|),
    ``alpha_2.csv`` (unsquared), ``alpha_combined.csv`` (alpha_2 weighted by alpha_1 per
    image) and ``alphas_pairs.csv`` (per ordered pair: images used, the three values and
    95 % bootstrap intervals) into ``out`` (default ``RUN/alphas``). The target's
    logits on every adversarial set are cached (kind ``advlogits``).
    """
    check("n_boot", n_boot)
    folder = RunFolder(run_dir)
    settings, store = folder.settings, folder.cache(cache)
    run = load_run(run_dir, cache=store, device=device, batch_size=batch_size)
    t = run.transfer
    names, n = t.names, len(t.names)
    # (source set, model) -> the cache entry of its logits: models^2 x images x classes in all, mapped when used.
    entries: dict[tuple[int, int], StoredArrays] = {}
    for target in tqdm(range(n), desc="alphas: logits on every set", unit="model", disable=None):
        loaded: list = []

        def on_set(s: int, target: int = target, loaded: list = loaded) -> Iterator[np.ndarray]:
            if not loaded:
                loaded.append(create_model(t.specs[target], cache=store, device=resolve_device(device)))
            found = store.open("adv", t.adv_keys[s])
            if found is None:
                raise ArchsimError(
                    f"the adversarial set of {names[s]} vanished from {store.root} during the run; rerun to recompute "
                    f"it"
                )
            shape = found.shape("images")
            size = batch_size_for(loaded[0], batch_size, "evaluate", shape[1:], shape[0], store)
            batches = (torch.from_numpy(rows) for rows in found.batches("images", size))
            return (rows.numpy() for rows in predict_stream(loaded[0], batches))

        for s in range(n):
            key = digest("advlogits", t.fingerprints[target], t.adv_keys[s])
            entries[s, target] = store.get_or_stream(
                "advlogits", key, "logits", t.clean_logits.shape[1:], np.float32, lambda s=s: on_set(s)
            )
    # Each map holds a file descriptor: the diagonal stays mapped, the other pairs are mapped one at a time.
    own = [entries[m, m].mapped("logits") for m in range(n)]

    rng = np.random.default_rng(settings.seed)
    a1, a2, combined = (np.full((n, n), np.nan) for _ in range(3))
    rows = []
    for s in range(n):
        for target in range(n):
            both = t.clean_correct[s] & t.clean_correct[target]
            d_ss = (own[s] - t.clean_logits[s])[both]
            d_st = (entries[s, target].mapped("logits") - t.clean_logits[target])[both]
            d_tt = (own[target] - t.clean_logits[target])[both]
            row = {"source": names[s], "target": names[target], "images": int(both.sum())}
            row.update(pair_alphas(d_ss, d_st, d_tt, n_boot, rng))
            a1[s, target], a2[s, target], combined[s, target] = row["alpha_1"], row["alpha_2"], row["alpha_combined"]
            rows.append(row)
    frame = lambda values: pd.DataFrame(values, index=names, columns=names)  # noqa: E731
    result = {
        "alpha_1": frame(a1),
        "alpha_2": frame(a2),
        "alpha_combined": frame(combined),
        "pairs": pd.DataFrame(rows),
    }
    out = Path(out) if out is not None else Path(run_dir) / "alphas"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("alpha_1", "alpha_2", "alpha_combined"):
        atomic_write_text(out / f"{name}.csv", result[name].to_csv(float_format="%.9f"))
    atomic_write_text(out / "alphas_pairs.csv", result["pairs"].to_csv(index=False, float_format="%.6g"))
    return result
