"""Ensembles (docs/method.md#decisions): does SAT diversity predict what logit averaging gains?

Ensembles are scored from the members' clean logits, by default on every image of the
run's evaluation split (as the paper scores them on the whole validation set; the
members' logits on images beyond the run's are computed once and cached), or on the
run's SAT images alone. The recommended ensemble is chosen on the run's SAT images and
its error measured on the images the run did not use (held out), where there are any.
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
from archsim.measures.comparison import correlate, partial_correlate
from archsim.params import RULES, check
from archsim.report.text import table_text
from archsim.runs import RunFolder

MAX_ENUMERATED = 5000
"""Up to this many k-subsets every one is scored; beyond, sets are sampled."""

IMAGES = RULES["images"].choices
"""Where ensembles are scored: every image of the run's evaluation split, or the run's SAT images."""

RECOMMENDATION_RULE = (
    "the k-set of lowest ensemble error on the run's SAT images; among the sets within one standard error of it "
    "(comparable accuracy), the one of lowest mean SAT"
)


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
    """Every 2-ensemble: ``a``, ``b``, their SAT, errors and error reduction rate (docs/method.md#decisions)."""
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
    *,
    ks: tuple[int, ...] = (2, 3, 4, 5),
    max_sets: int = MAX_ENUMERATED,
    n_random: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean ensemble scores of K models drawn from L clusters (docs/method.md#decisions), beside random K-sets.

    Every K-subset is scored when there are at most ``max_sets`` of them (L is then
    the number of clusters a subset spans); otherwise up to ``max_sets / K`` sets are
    sampled per L, one member from each of L random clusters and the rest from their
    union. L = K (one model from each of K clusters) is the paper's most diverse choice;
    every row also holds the mean of ``n_random`` uniformly drawn K-sets of its K
    (``random_*``), the baseline at every size.
    """
    rng = np.random.default_rng(seed)
    n = len(names)
    rows = []
    for k in ks:
        if k > n:
            continue
        random_scores = _scored(names, logits, labels, sat, _sets_of_size(n, k, n_random, rng))
        baseline = {
            "random_sets": len(random_scores),
            "random_mean_error": random_scores["error"].mean(),
            "random_mean_err_reduction": random_scores["err_reduction"].mean(),
        }
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
                    **baseline,
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
    """Result of :func:`study_ensembles`; each table is one CSV of ``archsim ensemble``. ``recommended`` holds the
    recommended set (:data:`RECOMMENDATION_RULE`), its error where it was measured and the random sets' there."""

    pairs: pd.DataFrame
    k_table: pd.DataFrame
    selection: pd.DataFrame
    correlations: pd.DataFrame
    recommended: dict

    def summary(self) -> str:
        """What ``archsim ensemble`` prints: the correlations, the K-from-L table, the selection and the recommended
        set with its measured error (the clusters' and images' provenance where :func:`ensembles_on_run` gave it)."""
        best, k = self.recommended, len(self.recommended["members"])
        lines = []
        if "clusters" in best:
            lines.append(
                f"{best['clusters']} clusters ({best['clusters_from']}); ensembles scored on {best['scored_on']}"
            )
            if k > best["clusters"]:
                lines.append(
                    f"note: no {k}-set takes one model from each of {k} clusters (L = K); give --clusters {k} or more"
                )
        measured_on = best.get("measured_on", "images")
        lines += [
            "SAT vs 2-ensemble error reduction rate (also given the members' error), and k-set diversity vs errors:",
            table_text(self.correlations),
            "\nK models from L clusters, beside random K-sets (means over the sets):",
            table_text(self.k_table),
            "\nselection:",
            table_text(
                self.selection,
                ["selection", "members", "mean_sat", "error", "err_reduction", "all_wrong", "random_sets_not_better"],
            ),
            f"\nrecommended {k}-ensemble: {' + '.join(best['members'])} (mean SAT {best['mean_sat']:.2f}): "
            f"top-1 error {best['error']:.2f}% on {best['images']} {measured_on}, random {k}-sets "
            f"{best['random_mean_error']:.2f}% on average there",
            f"rule: {best['rule']}",
        ]
        return "\n".join(lines)


def recommend(sets: list[tuple[int, ...]], logits: np.ndarray, labels: np.ndarray, sat: np.ndarray) -> tuple[int, ...]:
    """The set of :data:`RECOMMENDATION_RULE` among ``sets``, chosen on ``logits`` and ``labels``.

    Diversity alone can choose badly: where the most diverse models of a zoo are its weakest, the set of lowest mean
    SAT reduces its members' error the most and still errs more than random sets. So error comes first, and SAT
    chooses among the sets that accuracy cannot tell apart (one binomial standard error, at least one image).
    """
    scores = [set_scores(logits, labels, sat, s) for s in sets]
    errors = np.array([score["error"] for score in scores])
    best = errors.min() / 100
    margin = 100 * max(math.sqrt(best * (1 - best) / len(labels)), 1 / len(labels))
    comparable = [i for i in range(len(sets)) if errors[i] <= errors.min() + margin + 1e-9]
    return sets[min(comparable, key=lambda i: (scores[i]["mean_sat"], errors[i], sets[i]))]


def study_ensembles(
    names: list[str],
    logits: np.ndarray,
    labels: np.ndarray,
    sat: np.ndarray,
    clusters: np.ndarray,
    *,
    k: int = 3,
    n_random: int = 1000,
    seed: int = 0,
    choose_on: tuple[np.ndarray, np.ndarray] | None = None,
    measure_on: tuple[np.ndarray, np.ndarray] | None = None,
) -> EnsembleStudy:
    """The ensemble study on one run (docs/method.md#decisions): pairs, K-from-L with a random baseline at every K,
    the paper's most diverse choice (L = K) and the lowest-mean-SAT set against random k-sets, all-wrong counts, and
    a recommended k-set, chosen among every k-set where there are at most :data:`MAX_ENUMERATED`, else among the
    random sets, the L = K sets and the lowest- and highest-mean-SAT sets.

    Parameters
    ----------
    names : list of str
        Model names, N.
    logits : array [N, M, C]
        Clean logits of every model on the M images ensembles are scored on.
    labels : int array [M]
    sat : array [N, N]
        The run's SAT matrix.
    clusters : int array [N]
        A cluster per model (spectral clusters of ``sat``).
    k : int
        Size of the recommended ensemble.
    n_random : int
        Random k-sets the choices are compared against (at every K of the K-from-L table too).
    choose_on, measure_on : (logits, labels), optional
        Images the recommendation is chosen on (default: ``logits``) and those its error is measured on (default:
        ``logits``; give held-out images, so that the choice is not scored on the images that chose it).
    """
    n = len(names)
    if not 2 <= k <= n:
        raise ParameterError("k", f"{k} must lie between 2 and the {n} models of the run")
    rng = np.random.default_rng(seed)
    pairs = pair_table(names, logits, labels, sat)
    k_table = k_from_l(names, logits, labels, sat, clusters, n_random=n_random, seed=seed)

    lowest, highest = most_diverse_set(sat, k), most_diverse_set(-sat, k)
    random_sets = _sets_of_size(n, k, n_random, rng)
    one_per_cluster = _sets_from_clusters(clusters, k, k, n_random, rng) if len(np.unique(clusters)) >= k else []
    random_scores = _scored(names, logits, labels, sat, random_sets)
    candidates = (
        sorted({*random_sets, *one_per_cluster, lowest, highest})
        if math.comb(n, k) > MAX_ENUMERATED
        else list(itertools.combinations(range(n), k))
    )
    chosen_logits, chosen_labels = choose_on if choose_on is not None else (logits, labels)
    recommended = recommend(candidates, chosen_logits, chosen_labels, sat)
    singles = _scored(names, logits, labels, sat, [recommended, lowest, highest])
    singles.insert(0, "selection", ["recommended (error first, then SAT)", "lowest mean SAT", "highest mean SAT"])
    summaries = [("random", random_scores)]
    if one_per_cluster:
        summaries.insert(
            0, (f"one from each of {k} clusters (L = K)", _scored(names, logits, labels, sat, one_per_cluster))
        )
    means = pd.DataFrame(
        [
            {"selection": f"{name} (mean of {len(table)})", "members": "", **table.drop(columns="members").mean()}
            for name, table in summaries
        ]
    )
    selection = pd.concat([singles, means], ignore_index=True)
    # The share of random sets each choice beats or ties: its percentile among them.
    selection["random_sets_not_better"] = [float((random_scores["error"] >= e).mean()) for e in selection["error"]]
    selection.loc[len(selection) - 1, "random_sets_not_better"] = np.nan  # the random sets' own mean
    selection.insert(1, "k", k)

    correlations = ensemble_correlations(pairs, random_scores, k)
    measured_logits, measured_labels = measure_on if measure_on is not None else (logits, labels)
    measured = _scored(names, measured_logits, measured_labels, sat, [recommended, *random_sets])
    return EnsembleStudy(
        pairs,
        k_table,
        selection,
        correlations,
        {
            "members": [names[m] for m in recommended],
            "error": measured["error"].iloc[0],
            "err_reduction": measured["err_reduction"].iloc[0],
            "mean_sat": measured["mean_sat"].iloc[0],
            "random_mean_error": measured["error"].iloc[1:].mean(),
            "images": len(measured_labels),
            "rule": RECOMMENDATION_RULE,
        },
    )


def ensemble_correlations(pairs: pd.DataFrame, random_scores: pd.DataFrame, k: int) -> pd.DataFrame:
    """SAT against the 2-ensembles' error reduction (also given the members' mean error) and their error given it, and
    the random k-sets' mean SAT against their all-wrong count, error and error reduction."""
    member_error = pairs["mean_member_error"].to_numpy()
    rows = [
        {
            "x": "sat",
            "y": "err_reduction",
            "over": "2-ensembles",
            "given": "",
            "n": len(pairs),
            **correlate(pairs["sat"].to_numpy(), pairs["err_reduction"].to_numpy()),
        },
        {
            "x": "sat",
            "y": "err_reduction",
            "over": "2-ensembles",
            "given": "mean_member_error",
            "n": len(pairs),
            **partial_correlate(pairs["sat"].to_numpy(), pairs["err_reduction"].to_numpy(), member_error),
        },
        {
            "x": "sat",
            "y": "error",
            "over": "2-ensembles",
            "given": "mean_member_error",
            "n": len(pairs),
            **partial_correlate(pairs["sat"].to_numpy(), pairs["error"].to_numpy(), member_error),
        },
    ]
    for column in ("all_wrong", "error", "err_reduction"):
        rows.append(
            {
                "x": "mean_sat",
                "y": column,
                "over": f"{len(random_scores)} random {k}-ensembles",
                "given": "",
                "n": len(random_scores),
                **correlate(random_scores["mean_sat"].to_numpy(), random_scores[column].to_numpy().astype(float)),
            }
        )
    return pd.DataFrame(rows)


def evaluation_logits(
    folder: RunFolder, run_labels: np.ndarray, store: CacheStore, *, device: str, batch_size: int | str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every model's clean logits on every image of the run's evaluation split [N, M, C], their labels [M], and a mask
    [M] of the images the run did not use (held out). Logits found in the cache are read; the rest computed there."""
    from archsim.data import load_data, stratified_indices
    from archsim.hardware import resolve_device
    from archsim.models import create_model
    from archsim.transfer.stages import cache_clean_logits, stacked_logits

    settings = folder.settings
    full = load_data(settings.data, split="eval", seed=settings.seed, store=store, views=folder.views)
    labels = full.labels.numpy()
    used = stratified_indices(labels, settings.n_images, settings.seed)
    if not np.array_equal(labels[used], run_labels):  # before any model is run
        raise ParameterError(
            "run_dir", f"the run's images are not the draw its settings make of {settings.data!r}; use images='sat'"
        )
    held_out = np.ones(len(labels), dtype=bool)
    held_out[used] = False
    on = resolve_device(device)
    keys = []
    for spec in settings.models:
        model = create_model(spec, cache=store, device=on)
        keys.append(cache_clean_logits(model, full, store, batch_size, folder.precision)[0])
        del model
    # One memory-mapped entry, built a model at a time, as the run stacks its own clean logits.
    return stacked_logits(store, keys), labels, held_out


def ensembles_on_run(
    run_dir: str | Path,
    *,
    k: int = 3,
    clusters: int | None = None,
    random_sets: int = 1000,
    images: str = "eval",
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
) -> EnsembleStudy:
    """``archsim ensemble``: :func:`study_ensembles` on a finished run, written into ``out``
    (default ``RUN/ensembles``): ``ensemble_pairs.csv``, ``ensemble_k.csv``,
    ``ensemble_selection.csv``, ``ensemble_correlations.csv``, ``ensembles.png``.

    ``clusters``: spectral clusters for the K-from-L table and the L = K choice (default: the k of the run's own
    analysis, ``clusters.csv``, else the eigengap's). ``random_sets``: the random k-sets the choices are compared
    with. ``images``: ``eval`` scores ensembles on every image of the run's evaluation split (the members' logits on
    the images beyond the run's are computed once and cached) and measures the recommendation on the held-out ones;
    ``sat`` on the run's SAT images alone. ``recommended["clusters_from"]`` says where the clusters' k came from.
    """
    from archsim.analysis import spectral_clusters
    from archsim.report.figures import ensemble_figure, write_png
    from archsim.runs import load_run

    folder = RunFolder(run_dir)
    settings = folder.settings
    n = len(settings.models)
    if not 2 <= k <= n:
        raise ParameterError("k", f"{k} must lie between 2 and the {n} models of the run")
    if clusters is not None and not 2 <= clusters <= n:
        raise ParameterError("clusters", f"{clusters} must lie between 2 and the {n} models of the run")
    check("random_sets", random_sets)
    check("images", images)
    store = folder.cache(cache)
    run = load_run(run_dir, cache=store, device=device, batch_size=batch_size)
    if clusters is None:
        analysed = Path(run_dir) / "clusters.csv"
        if analysed.is_file():
            clusters, clusters_from = int(pd.read_csv(analysed)["cluster"].nunique()), "the run's analysis"
        else:
            clusters, clusters_from = None, "the eigengap"
    else:
        clusters_from = "given"
    spectral = spectral_clusters(run.sat, k=clusters)
    transfer = run.transfer
    sat_images = (transfer.clean_logits, transfer.labels)
    scored, measure_on = sat_images, sat_images
    if images == "eval":
        logits, labels, held_out = evaluation_logits(
            folder, transfer.labels, store, device=device, batch_size=batch_size
        )
        scored = (logits, labels)
        if held_out.any():
            measure_on = (logits[:, held_out], labels[held_out])
    study = study_ensembles(
        transfer.names,
        *scored,
        run.sat.to_numpy(),
        spectral.labels.to_numpy(),
        k=k,
        n_random=random_sets,
        seed=settings.seed,
        choose_on=sat_images,
        measure_on=measure_on,
    )
    study.recommended.update(
        clusters=spectral.k,
        clusters_from=clusters_from,
        measured_on="held-out images"
        if measure_on is not sat_images
        else "SAT images of the run (none held out: chosen and measured on the same images)",
        scored_on="every evaluation image" if images == "eval" else "the run's SAT images",
    )
    study.k_table.insert(0, "clusters", spectral.k)
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
