"""Ensembles (SPEC §2.6): does SAT diversity predict what logit averaging gains?

All scores come from a run's clean logits on its evaluation images, so an ensemble's
error is measured on the same images SAT was; no model is run again.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from archsim.cache import CacheStore, atomic_write_text
from archsim.errors import ParameterError
from archsim.measures.comparison import correlate

MAX_ENUMERATED = 5000
"""Up to this many k-subsets every one is scored; beyond, sets are sampled."""


def set_scores(logits: np.ndarray, labels: np.ndarray, sat: np.ndarray, members: tuple[int, ...]) -> dict[str, float]:
    """Error of the logit-averaged ensemble of ``members`` and what explains it.

    Returns ``error`` (top-1, %), ``mean_member_error`` (%), ``err_reduction``
    (1 - error / mean member error; NaN when no member errs), ``all_wrong`` (images
    every member gets wrong) and ``mean_sat`` (mean SAT over the pairs of members).
    """
    chosen = list(members)
    ensemble_wrong = logits[chosen].mean(0).argmax(-1) != labels
    member_wrong = logits[chosen].argmax(-1) != labels[None]
    error, member_error = 100 * ensemble_wrong.mean(), 100 * member_wrong.mean()
    i, j = np.triu_indices(len(chosen), k=1)
    return {
        "error": float(error),
        "mean_member_error": float(member_error),
        "err_reduction": float(1 - error / member_error) if member_error > 0 else np.nan,
        "all_wrong": int(member_wrong.all(0).sum()),
        "mean_sat": float(sat[np.ix_(chosen, chosen)][i, j].mean()),
    }


def _scored(names: list[str], logits, labels, sat, sets) -> pd.DataFrame:
    rows = [{"members": " + ".join(names[m] for m in s), **set_scores(logits, labels, sat, s)} for s in sets]
    return pd.DataFrame(rows)


def pair_table(names: list[str], logits: np.ndarray, labels: np.ndarray, sat: np.ndarray) -> pd.DataFrame:
    """Every 2-ensemble: ``a``, ``b``, their SAT, errors and error reduction rate (SPEC §2.6a)."""
    rows = []
    for a, b in itertools.combinations(range(len(names)), 2):
        rows.append({"a": names[a], "b": names[b], "sat": float(sat[a, b]), **set_scores(logits, labels, sat, (a, b))})
    table = pd.DataFrame(rows).drop(columns="mean_sat")
    return table.sort_values("sat", kind="stable").reset_index(drop=True)


def _sets_of_size(n: int, k: int, n_sets: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    if math.comb(n, k) <= n_sets:
        return list(itertools.combinations(range(n), k))
    found: set[tuple[int, ...]] = set()
    while len(found) < n_sets:
        found.add(tuple(sorted(rng.choice(n, size=k, replace=False).tolist())))
    return sorted(found)


def _sets_from_clusters(
    clusters: np.ndarray, k: int, n_clusters: int, n_sets: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """Up to ``n_sets`` distinct k-sets whose members come from exactly ``n_clusters`` clusters."""
    ids = np.unique(clusters)
    members = {c: np.flatnonzero(clusters == c) for c in ids}
    found: set[tuple[int, ...]] = set()
    for _ in range(20 * n_sets):  # bounded: some (k, L) combinations have few or no sets
        if len(found) >= n_sets:
            break
        chosen = rng.choice(ids, size=n_clusters, replace=False)
        pool = np.concatenate([members[c] for c in chosen])
        if len(pool) < k:
            continue
        firsts = [int(rng.choice(members[c])) for c in chosen]
        rest = rng.choice(np.setdiff1d(pool, firsts), size=k - n_clusters, replace=False).tolist()
        found.add(tuple(sorted(firsts + [int(r) for r in rest])))
    return sorted(found)


def k_from_l(
    names: list[str],
    logits: np.ndarray,
    labels: np.ndarray,
    sat: np.ndarray,
    clusters: np.ndarray,
    ks: tuple[int, ...] = (2, 3, 4, 5),
    max_sets: int = MAX_ENUMERATED,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean ensemble scores of K models drawn from L clusters (SPEC §2.6b).

    Every K-subset is scored when there are at most ``max_sets`` of them (L is then
    the number of clusters a subset spans); otherwise up to ``max_sets / K`` sets are
    sampled per L, one member from each of L random clusters and the rest from their
    union.
    """
    rng = np.random.default_rng(seed)
    n = len(names)
    rows = []
    for k in ks:
        if k > n:
            continue
        if math.comb(n, k) <= max_sets:
            by_l: dict[int, list[tuple[int, ...]]] = {}
            for s in itertools.combinations(range(n), k):
                by_l.setdefault(len(set(clusters[list(s)])), []).append(s)
        else:
            levels = range(1, min(k, len(np.unique(clusters))) + 1)
            by_l = {level: _sets_from_clusters(clusters, k, level, max_sets // k, rng) for level in levels}
        for level, sets in sorted(by_l.items()):
            if not sets:
                continue
            scores = _scored(names, logits, labels, sat, sets)
            rows.append(
                {
                    "k": k,
                    "l": level,
                    "sets": len(sets),
                    **{
                        f"mean_{c}": scores[c].mean()
                        for c in ("err_reduction", "error", "mean_member_error", "all_wrong", "mean_sat")
                    },
                }
            )
    return pd.DataFrame(rows)


def most_diverse_set(sat: np.ndarray, k: int, max_sets: int = 20 * MAX_ENUMERATED) -> tuple[int, ...]:
    """The k-set of lowest mean pairwise SAT: exhaustive when feasible, else greedy from the least similar pair."""
    n = len(sat)
    i, j = np.triu_indices(k, k=1)
    if math.comb(n, k) <= max_sets:
        return min(itertools.combinations(range(n), k), key=lambda s: sat[np.ix_(s, s)][i, j].mean())
    off = sat + np.diag(np.full(n, np.inf))
    a, b = np.unravel_index(np.argmin(off), off.shape)
    chosen = [int(a), int(b)]
    while len(chosen) < k:
        rest = [m for m in range(n) if m not in chosen]
        chosen.append(min(rest, key=lambda m: sat[m, chosen].mean()))
    return tuple(sorted(chosen))


@dataclass
class EnsembleStudy:
    """Result of :func:`study_ensembles`; each table is one CSV of ``archsim ensemble``."""

    pairs: pd.DataFrame
    k_table: pd.DataFrame
    selection: pd.DataFrame
    correlations: pd.DataFrame
    recommended: dict


def study_ensembles(
    names: list[str],
    logits: np.ndarray,
    labels: np.ndarray,
    sat: np.ndarray,
    clusters: np.ndarray,
    k: int = 3,
    n_random: int = 1000,
    seed: int = 0,
) -> EnsembleStudy:
    """SPEC §2.6 a-d on one run: pairs, K-from-L, SAT-diverse vs random k-sets, all-wrong counts.

    Parameters
    ----------
    names : list of str
        Model names, N.
    logits : array [N, M, C]
        Clean logits of every model on the run's M images.
    labels : int array [M]
    sat : array [N, N]
        The run's SAT matrix.
    clusters : int array [N]
        A cluster per model (spectral clusters of ``sat``).
    k : int
        Size of the recommended ensemble.
    n_random : int
        Random k-sets the diverse choice is compared against.
    """
    n = len(names)
    if not 2 <= k <= n:
        raise ParameterError("k", f"{k} must lie between 2 and the {n} models of the run")
    rng = np.random.default_rng(seed)
    pairs = pair_table(names, logits, labels, sat)
    k_table = k_from_l(names, logits, labels, sat, clusters, seed=seed)

    diverse = most_diverse_set(sat, k)
    least = most_diverse_set(-sat, k)
    random_sets = _sets_of_size(n, k, n_random, rng)
    random_scores = _scored(names, logits, labels, sat, random_sets)
    chosen = _scored(names, logits, labels, sat, [diverse, least])
    chosen.insert(0, "selection", ["most diverse by SAT", "least diverse by SAT"])
    summary = random_scores.drop(columns="members").mean().to_dict()
    selection = pd.concat(
        [chosen, pd.DataFrame([{"selection": f"random (mean of {len(random_sets)})", "members": "", **summary}])],
        ignore_index=True,
    )
    # Share of random sets the SAT-diverse choice beats or ties: its percentile among them.
    selection["random_sets_not_better"] = [float((random_scores["error"] >= e).mean()) for e in chosen["error"]] + [
        np.nan
    ]
    selection.insert(1, "k", k)

    rows = [
        {
            "x": "sat",
            "y": "err_reduction",
            "over": "2-ensembles",
            "n": len(pairs),
            **correlate(pairs["sat"].to_numpy(), pairs["err_reduction"].to_numpy()),
        }
    ]
    for column in ("all_wrong", "error", "err_reduction"):
        rows.append(
            {
                "x": "mean_sat",
                "y": column,
                "over": f"{len(random_sets)} random {k}-ensembles",
                "n": len(random_sets),
                **correlate(random_scores["mean_sat"].to_numpy(), random_scores[column].to_numpy().astype(float)),
            }
        )
    best = chosen.iloc[0]
    recommended = {
        "members": best["members"].split(" + "),
        "error": best["error"],
        "err_reduction": best["err_reduction"],
        "mean_sat": best["mean_sat"],
        "random_mean_error": summary["error"],
    }
    return EnsembleStudy(pairs, k_table, selection, pd.DataFrame(rows), recommended)


def ensembles_on_run(
    run_dir: str | Path,
    k: int = 3,
    clusters: int | None = None,
    random_sets: int = 1000,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
) -> EnsembleStudy:
    """``archsim ensemble``: :func:`study_ensembles` on a finished run, written into ``out``
    (default ``RUN/ensembles``): ``ensemble_pairs.csv``, ``ensemble_k.csv``,
    ``ensemble_selection.csv``, ``ensemble_correlations.csv``, ``ensembles.png``.

    ``clusters``: spectral clusters for the K-from-L table (default min(5, N), so L
    can reach K = 5; the run's own eigengap k is often smaller). ``random_sets``: the
    random k-sets the diverse choice is compared with.
    """
    from archsim.analysis import spectral_clusters
    from archsim.report.figures import ensemble_figure, write_png
    from archsim.runs import RunFolder, load_run

    settings = RunFolder(run_dir).settings
    n = len(settings["models"])
    if not 2 <= k <= n:
        raise ParameterError("k", f"{k} must lie between 2 and the {n} models of the run")
    if clusters is not None and not 2 <= clusters <= n:
        raise ParameterError("clusters", f"{clusters} must lie between 2 and the {n} models of the run")
    if isinstance(random_sets, bool) or not isinstance(random_sets, int) or random_sets < 1:
        raise ParameterError("random_sets", f"must be a whole number of 1 or more, got {random_sets!r}")
    run = load_run(run_dir, cache, device, batch_size)
    labels = spectral_clusters(run.sat, k=min(clusters if clusters is not None else 5, n)).labels
    transfer = run.transfer
    study = study_ensembles(
        transfer.names,
        transfer.clean_logits,
        transfer.labels,
        run.sat.to_numpy(),
        labels.to_numpy(),
        k,
        random_sets,
        settings["seed"],
    )
    study.k_table.insert(0, "clusters", labels.nunique())
    out = Path(out) if out is not None else Path(run_dir) / "ensembles"
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (
        ("ensemble_pairs.csv", study.pairs),
        ("ensemble_k.csv", study.k_table),
        ("ensemble_selection.csv", study.selection),
        ("ensemble_correlations.csv", study.correlations),
    ):
        atomic_write_text(out / name, table.to_csv(index=False, float_format="%.6g"))
    write_png(ensemble_figure(study.pairs, study.k_table), out / "ensembles.png")
    return study
