"""Analysis of a SAT matrix (docs/method.md#analysis): model cards, component importance, spectral clusters,
keywords; and how far matrices computed elsewhere agree."""

from archsim.analysis.agreement import compare_matrices
from archsim.analysis.cards import CARD_COLUMNS, read_cards
from archsim.analysis.clustering import spectral_clusters
from archsim.analysis.importance import component_importance
from archsim.analysis.keywords import cluster_keywords
from archsim.analysis.matrix import read_matrix

__all__ = [
    "CARD_COLUMNS",
    "compare_matrices",
    "read_cards",
    "read_matrix",
    "spectral_clusters",
    "component_importance",
    "cluster_keywords",
]
