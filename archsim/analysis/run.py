"""One analysis of one SAT matrix (docs/method.md#analysis): clusters and their stability, component
importance, keywords, training vs architecture (written as CSVs and a report by :mod:`archsim.report.analyze`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from archsim.analysis.baseline import component_baseline
from archsim.analysis.cards import cards_for
from archsim.analysis.clustering import SpectralResult, spectral_clusters
from archsim.analysis.importance import component_importance
from archsim.analysis.keywords import cluster_keywords
from archsim.analysis.stability import cluster_stability
from archsim.analysis.training import training_vs_architecture
from archsim.errors import ParameterError
from archsim.specs import check_seed

# Fewer models than this leave too few pairs for boosting or resampling to mean anything.
MIN_MODELS_IMPORTANCE = 4
MIN_MODELS_STABILITY = 5


@dataclass
class Analysis:
    """Everything ``analyze`` found; ``None`` parts were not computable (``notes`` says why)."""

    sat: pd.DataFrame
    spectral: SpectralResult
    clusters: pd.DataFrame
    stability: pd.DataFrame | None = None
    cards: pd.DataFrame | None = None
    importance: pd.DataFrame | None = None
    keywords: pd.DataFrame | None = None
    training: pd.DataFrame | None = None
    component_baseline: pd.DataFrame | None = None
    """Clusters of the cards alone against the SAT clusters (:func:`~archsim.analysis.baseline.component_baseline`)."""
    models: pd.DataFrame | None = None
    pairs: pd.DataFrame | None = None
    """A run's pairs table (intervals, fooled shares, |X_AB|), for the report's hover; None for a bare matrix."""
    config: dict[str, Any] | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Results of ``compare-attacks`` and ``measures`` found in the run folder, shown in the report."""

    def tables(self) -> dict[str, pd.DataFrame]:
        search = self.spectral.search
        tables = {
            "clusters.csv": self.clusters,
            "spectral_distances.csv": self.spectral.ordered_distances(),
            "kmeans_search.csv": pd.DataFrame([{**asdict(search), "settled": search.settled}]),
        }
        for name, table in (
            ("importance.csv", self.importance),
            ("keywords.csv", self.keywords),
            ("stability.csv", self.stability),
            ("training_vs_architecture.csv", self.training),
            ("component_baseline.csv", self.component_baseline),
        ):
            if table is not None:
                tables[name] = table
        return tables


def analyze_matrix(
    sat: pd.DataFrame,
    cards: pd.DataFrame | None = None,
    models: pd.DataFrame | None = None,
    k: int | None = None,
    seed: int = 0,
    n_resamples: int = 30,
) -> Analysis:
    """Analyse a validated SAT matrix; ``cards`` enable importance and keywords, ``models`` the training-vs-architecture
    table."""
    if k is not None and k > len(sat):
        raise ParameterError("k", f"{k} is more than the {len(sat)} models; choose at most {len(sat)}")
    spectral = spectral_clusters(sat, k=k, seed=check_seed(seed))
    analysis = Analysis(sat, spectral, spectral.labels.rename_axis("model").reset_index(), models=models)
    if len(sat) >= MIN_MODELS_STABILITY and spectral.k < len(sat) - 1:
        analysis.stability, per_model = cluster_stability(
            sat, spectral.labels, spectral.k, n_resamples=n_resamples, seed=seed
        )
        analysis.clusters["stability"] = per_model.to_numpy()
    else:
        analysis.notes.append(f"cluster stability needs at least {MIN_MODELS_STABILITY} models and k below N-1")
    if cards is not None:
        analysis.cards = cards_for(cards, list(sat.index))
        analysis.keywords = cluster_keywords(analysis.cards, spectral.labels)
        analysis.component_baseline = component_baseline(analysis.cards, spectral.labels, spectral.k, seed=seed)
        if len(sat) >= MIN_MODELS_IMPORTANCE:
            analysis.importance = component_importance(sat, analysis.cards, seed=seed)
        else:
            analysis.notes.append(f"component importance needs at least {MIN_MODELS_IMPORTANCE} models")
    else:
        analysis.notes.append("no model cards: component importance and keywords skipped")
    if models is not None and {"architecture", "regime", "seed"} <= set(models.columns):
        analysis.training = training_vs_architecture(sat, models)
    return analysis
