"""The component-only baseline (the SAT paper's appendix): clusters of the model cards alone, against SAT's.

If the architecture components told the whole story, clustering the cards would give SAT's clusters. The paper
compares K-means on the components with the SAT clusters; archsim gives K-means on the one-hot card table and the
same spectral clustering it runs on SAT, applied to the cards' similarity (the share of components two models share),
each scored by its adjusted Rand index against the SAT clusters.
"""

from __future__ import annotations

import pandas as pd
from sklearn.metrics import adjusted_rand_score

from archsim.analysis.clustering import kmeans_restarts, spectral_clusters

MAX_RESTARTS = 2_000
"""K-means restarts of the baseline. One-hot cards are many tied points: their lowest objective is rare (on the
published 69 cards at k = 10, once in 20,000 restarts), so the baseline does not wait for it to be found again
(its rows say whether it was)."""


def one_hot_cards(cards: pd.DataFrame) -> pd.DataFrame:
    """One column per ``component: value`` word, 1 where a model's card has it (missing values are a word too)."""
    return pd.get_dummies(cards.fillna("~").astype(str), prefix_sep=": ", dtype=float)


def card_similarity(cards: pd.DataFrame) -> pd.DataFrame:
    """The share of components on which two models' cards agree (1 on the diagonal)."""
    values = cards.fillna("~").astype(str).to_numpy()
    same = (values[:, None, :] == values[None, :, :]).mean(-1)
    return pd.DataFrame(same, index=cards.index, columns=cards.index)


def component_baseline(cards: pd.DataFrame, sat_labels: pd.Series, k: int, seed: int = 0) -> pd.DataFrame:
    """K-means on the one-hot cards and spectral clustering of the cards' similarity, each with ``k`` clusters and
    its adjusted Rand index against ``sat_labels`` (the SAT clusters of the same models).

    Returns one row per method: ``method``, ``k``, ``ari_vs_sat_clusters``, the K-means search's ``restarts`` and
    whether it ``settled`` (:class:`~archsim.analysis.clustering.KMeansSearch`), and the clusters found (``labels``, a
    space-separated list in the models' order).
    """
    cards = cards.loc[sat_labels.index]
    kmeans_labels, kmeans_search = kmeans_restarts(
        one_hot_cards(cards).to_numpy(), k, seed=seed, max_restarts=MAX_RESTARTS
    )
    spectral = spectral_clusters(card_similarity(cards), k=k, seed=seed, max_restarts=MAX_RESTARTS)
    rows = [
        ("K-means on the one-hot components", kmeans_labels, kmeans_search),
        ("spectral clustering of the components' similarity", spectral.labels.to_numpy(), spectral.search),
    ]
    return pd.DataFrame(
        [
            {
                "method": method,
                "k": k,
                "ari_vs_sat_clusters": float(adjusted_rand_score(sat_labels.to_numpy(), labels)),
                "restarts": search.restarts,
                "settled": search.settled,
                "labels": " ".join(map(str, labels)),
            }
            for method, labels, search in rows
        ]
    )


def describe_baseline(baseline: pd.DataFrame) -> str:
    """The baseline in a sentence: how far the cards alone give the SAT clusters."""
    scores = ", ".join(f"{row.method} {row.ari_vs_sat_clusters:.2f}" for row in baseline.itertuples())
    return (
        f"Clusters of the architecture components alone (the paper's baseline), adjusted Rand index against the SAT "
        f"clusters (1 = the same clusters): {scores}."
    )
