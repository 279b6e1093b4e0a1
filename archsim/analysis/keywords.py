"""Cluster keywords (docs/method.md#analysis): TF-IDF over component values, averaged per cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer


def card_words(card: pd.Series) -> list[str]:
    """A model's words: one ``component: value`` per component that applies."""
    return [f"{component}: {value}" for component, value in card.items() if value not in ("~", "")]


def cluster_keywords(cards: pd.DataFrame, clusters: pd.Series, top: int = 5) -> pd.DataFrame:
    """Top ``top`` words per cluster with their mean TF-IDF score: columns cluster, rank, word, score."""
    vectorizer = TfidfVectorizer(analyzer=card_words, lowercase=False)
    matrix = vectorizer.fit_transform([cards.loc[name] for name in clusters.index]).toarray()
    vocabulary = vectorizer.get_feature_names_out()
    rows = []
    for cluster in sorted(clusters.unique()):
        mean = matrix[(clusters == cluster).to_numpy()].mean(0)
        order = np.lexsort((vocabulary, -mean))[:top]
        rows += [
            {"cluster": int(cluster), "rank": r + 1, "word": vocabulary[o], "score": float(mean[o])}
            for r, o in enumerate(order)
        ]
    return pd.DataFrame(rows)
