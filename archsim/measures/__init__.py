"""Measures of model similarity computed from a run's predictions and features."""

from archsim.measures.cka import cka_matrix, linear_cka
from archsim.measures.prediction import disagreement, error_consistency
from archsim.measures.sat import DEFAULT_EPS_S, SatTables, sat_tables, sat_value

MEASURES = {
    "disagreement": "share of images two models label differently (a dissimilarity); from clean predictions",
    "error-consistency": "Cohen's kappa of the correct/wrong patterns (Geirhos et al.); from clean predictions",
    "cka": "linear CKA of the classifier's input features (Kornblith et al.); one forward pass per image and model",
    "regions": "decision-region agreement on planes through image triplets (Somepalli et al.); 50 planes x 16 x 16 "
    "points per model",
    "boundary": "mean gap between decision boundaries along each model's sign-gradient direction (Tramer et al.; a "
    "dissimilarity)",
}

__all__ = [
    "DEFAULT_EPS_S",
    "MEASURES",
    "SatTables",
    "cka_matrix",
    "disagreement",
    "error_consistency",
    "linear_cka",
    "sat_tables",
    "sat_value",
]
