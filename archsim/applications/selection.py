"""Diverse selection of k models from a similarity matrix (docs/method.md#decisions).

k-means++ style: the first model uniformly at random, each next one with
probability proportional to the inverse of its similarity to the models already
chosen (its similarity to the closest chosen one, as k-means++ uses the distance
to the closest centre): the paper's P_1/sim. The similarity-proportional (P_sim)
and uniform samplers are the baselines the paper compares against. archsim adds an
``exponent`` on those weights (1: the paper's distributions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from archsim.errors import ArchsimError, ParameterError
from archsim.params import check
from archsim.report.text import table_text
from archsim.specs import check_seed

METHODS = ("inverse", "proportional", "uniform")

DISTRIBUTIONS = {"inverse": "P_1/sim", "proportional": "P_sim", "uniform": "uniform"}
"""The paper's name for each method's sampling distribution."""

FLOOR = 1e-3
"""Similarities are floored here before inverting: SAT can be exactly 0 (ln of the 1 % floor)."""


def diverse_sample(
    similarity: np.ndarray | pd.DataFrame,
    k: int,
    *,
    method: str = "inverse",
    seed: int | np.random.Generator | None = None,
    exponent: float = 1.0,
) -> list[int] | list[str]:
    """Draw ``k`` distinct models.

    Parameters
    ----------
    similarity : array or DataFrame [N, N]
        Symmetric, non-negative similarities (e.g. SAT). With a DataFrame the model
        names are returned, else indices.
    k : int
        How many models, 1 <= k <= N.
    method : {"inverse", "proportional", "uniform"}
        ``inverse`` (the paper's P_1/sim): next model with probability proportional
        to 1 / max similarity to the chosen ones (diverse); ``proportional``
        (P_sim): to that similarity (similar); ``uniform``: all remaining models
        equally likely.
    seed : int or Generator, optional
    exponent : float
        Exponent of those weights (1: the paper's distributions). SAT spans about 2-4.6
        between distinct models, so 1 / SAT weighs them within a factor of ~2 and
        the draws differ little from uniform ones (5 of the paper's 69 models, 1,000
        draws: mean SAT 2.64 against 2.66); higher exponents sharpen the choice (4: 2.58,
        16: 2.38). 0 is uniform.

    Examples
    --------
    >>> sat = np.array([[4.6, 4.0, 0.5], [4.0, 4.6, 0.6], [0.5, 0.6, 4.6]])
    >>> sorted(diverse_sample(sat, 3, seed=0))
    [0, 1, 2]
    """
    names = list(similarity.index) if isinstance(similarity, pd.DataFrame) else None
    s = np.asarray(similarity, dtype=float)
    n = len(s)
    if s.ndim != 2 or s.shape != (n, n):
        raise ArchsimError(f"the similarity matrix must be square, got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any():
        raise ArchsimError("the similarity matrix needs finite, non-negative entries (SAT with eps_s >= 1 is)")
    if method not in METHODS:
        raise ArchsimError(f"unknown selection method {method!r}; choose from {', '.join(METHODS)}")
    if not 1 <= k <= n:
        raise ParameterError("k", f"{k} must lie between 1 and the {n} models")
    if not (np.isfinite(exponent) and exponent >= 0):
        raise ParameterError("exponent", f"must be a finite number >= 0 (1: the paper's sampler), got {exponent}")
    rng = (
        seed
        if isinstance(seed, np.random.Generator)
        else np.random.default_rng(None if seed is None else check_seed(seed))
    )
    chosen = [int(rng.integers(n))]
    while len(chosen) < k:
        rest = np.setdiff1d(np.arange(n), chosen)
        closest = np.maximum(s[np.ix_(rest, chosen)].max(1), FLOOR)
        # In logs, shifted by the largest: closest**-exponent overflows (to inf, then NaN weights) at large ones, where
        # the draw tends to the least similar model; the shift changes no weight's share.
        log_weights = {
            "inverse": -exponent * np.log(closest),
            "proportional": exponent * np.log(closest),
            "uniform": np.zeros(len(rest)),
        }[method]
        weights = np.exp(log_weights - log_weights.max())
        chosen.append(int(rng.choice(rest, p=weights / weights.sum())))
    return [names[i] for i in chosen] if names is not None else chosen


def compare_samplers(
    similarity: pd.DataFrame,
    k: int,
    *,
    n_draws: int = 1000,
    seed: int = 0,
    score: Callable[[tuple[int, ...]], dict[str, float]] | None = None,
    exponent: float = 1.0,
) -> pd.DataFrame:
    """Each sampler's draws summarised: mean pairwise similarity of the drawn sets and,
    if ``score(indices) -> dict`` is given (e.g. ensemble error), the mean of its values.
    ``exponent`` as in :func:`diverse_sample`; ``distribution`` names each sampler as the paper does."""
    if k < 2:
        raise ParameterError("k", "must be at least 2 to compare how diverse the drawn sets are")
    rng = np.random.default_rng(check_seed(seed))
    values = similarity.to_numpy(dtype=float)
    i, j = np.triu_indices(k, k=1)
    rows = []
    for method in METHODS:
        draws = [sorted(diverse_sample(values, k, method=method, seed=rng, exponent=exponent)) for _ in range(n_draws)]
        row = {
            "method": method,
            "distribution": DISTRIBUTIONS[method],
            "k": k,
            "exponent": exponent if method != "uniform" else np.nan,
            "draws": n_draws,
            "mean_similarity": float(np.mean([values[np.ix_(d, d)][i, j].mean() for d in draws])),
        }
        if score is not None:
            scores = pd.DataFrame([score(tuple(d)) for d in draws])
            row.update({f"mean_{c}": float(scores[c].mean()) for c in scores.columns})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Selection:
    """Result of :func:`select_models`: the drawn models, the samplers compared (None for k = 1), where that
    table was written (None if nowhere) and what a user building an ensemble should know (``notes``)."""

    picked: list[str]
    table: pd.DataFrame | None
    out: Path | None
    notes: list[str]
    method: str
    draws: int

    def summary(self) -> str:
        """What ``archsim select`` prints: the draw, the samplers compared and the notes."""
        lines = [f"{self.method} draw of {len(self.picked)}: {', '.join(self.picked)}"]
        if self.table is not None:
            lines += [f"\nthe samplers over {self.draws} draws each:", table_text(self.table)]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def select_models(
    k: int,
    *,
    run_dir: str | Path | None = None,
    matrix: str | Path | None = None,
    method: str = "inverse",
    exponent: float = 1.0,
    draws: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    cache=None,
) -> Selection:
    """``archsim select``: draw a diverse set of ``k`` models of a finished run (``run_dir``) or of any similarity
    matrix (``matrix``), and compare the three samplers over ``draws`` draws each. For a run the comparison also
    scores each drawn set's ensemble on the run's images, and is written to ``out`` (default ``RUN/selection``)."""
    from archsim.analysis import read_matrix
    from archsim.applications.ensembles import set_scores
    from archsim.cache import atomic_write_text

    if (run_dir is None) == (matrix is None):
        raise ParameterError("run_dir", "give exactly one of {} (a run folder) or a matrix file")
    check("draws", draws)
    score = None
    if run_dir is not None:
        from archsim.runs import load_run

        run = load_run(run_dir, cache=cache, device=device, batch_size=batch_size)
        similarity, transfer = run.sat, run.transfer

        def score(members: list[str]) -> dict[str, float]:
            scores = set_scores(transfer.clean_logits, transfer.labels, similarity.to_numpy(), members)
            return {c: v for c, v in scores.items() if c != "mean_sat"}

    else:
        similarity = read_matrix(matrix)
    picked = diverse_sample(similarity, k, method=method, seed=seed, exponent=exponent)
    table = (
        compare_samplers(similarity, k, n_draws=draws, seed=seed, score=score, exponent=exponent) if k >= 2 else None
    )
    target = Path(out) if out is not None else (Path(run_dir) / "selection" if run_dir is not None else None)
    if table is not None and target is not None:
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target / "selection.csv", table.to_csv(index=False, float_format="%.6g"))
    notes = []
    if table is not None and "mean_error" in table:
        errors = table.set_index("method")["mean_error"]
        if errors["inverse"] > errors["uniform"]:
            notes.append(
                f"diverse draws err more than uniform ones on this run ({errors['inverse']:.3g} % against "
                f"{errors['uniform']:.3g} %): its most diverse models are among its weakest. To build an ensemble, "
                f"use archsim ensemble, which chooses by error first and by SAT among sets of comparable error"
            )
    return Selection(
        picked=picked,
        table=table,
        out=target if table is not None else None,
        notes=notes,
        method=method,
        draws=draws,
    )
