"""``archsim analyze``: clusters, importance and keywords of one SAT matrix, written as CSVs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from archsim.analysis.cards import cards_for, read_cards
from archsim.analysis.clustering import spectral_clusters
from archsim.analysis.importance import component_importance
from archsim.analysis.keywords import cluster_keywords
from archsim.analysis.matrix import read_matrix
from archsim.cache import atomic_write_text

ANALYSIS_FILES = ("clusters.csv", "importance.csv", "keywords.csv", "spectral_distances.csv")


def analyze(matrix: str | Path, cards: str | Path, out: str | Path, k: int | None = None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Analyse a SAT matrix with its model cards and write the tables into ``out``."""
    sat = read_matrix(matrix)
    model_cards = cards_for(read_cards(cards), list(sat.index))
    spectral = spectral_clusters(sat, k=k, seed=seed)
    tables = {
        "clusters.csv": spectral.labels.rename_axis("model").reset_index(),
        "importance.csv": component_importance(sat, model_cards, seed=seed),
        "keywords.csv": cluster_keywords(model_cards, spectral.labels),
        "spectral_distances.csv": spectral.ordered_distances(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        atomic_write_text(out / name, table.to_csv(index=name == "spectral_distances.csv", float_format="%.6f"))
    return tables
