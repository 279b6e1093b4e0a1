"""Which components make models differ (docs/method.md#analysis): boosting on component differences, permutation
importance."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.inspection import permutation_importance


def pair_features(sat: pd.DataFrame, cards: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Per unordered pair: 1 where the two cards differ in a component; target: their SAT."""
    values = cards.to_numpy()
    i, j = np.triu_indices(len(sat), k=1)
    features = pd.DataFrame((values[i] != values[j]).astype(float), columns=cards.columns)
    return features, sat.to_numpy()[i, j]


def component_importance(
    sat: pd.DataFrame,
    cards: pd.DataFrame,
    n_estimators: int = 500,
    max_depth: int = 12,
    min_samples_split: int = 4,
    learning_rate: float = 0.02,
    n_repeats: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """Permutation importance of each component for predicting SAT, sorted (paper's settings by default)."""
    features, target = pair_features(sat, cards)
    model = GradientBoostingRegressor(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_split=min_samples_split,
        learning_rate=learning_rate,
        random_state=seed,
    ).fit(features, target)
    result = permutation_importance(DistinctRows(model), features, target, n_repeats=n_repeats, random_state=seed)
    table = pd.DataFrame(
        {
            "component": features.columns,
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    return table.sort_values("importance_mean", ascending=False, kind="stable").reset_index(drop=True)


class DistinctRows(RegressorMixin, BaseEstimator):
    """A fitted regressor that predicts each distinct row of its input once.

    Written here for speed: the features of a pair are 0/1 differences in a dozen components, so the 2,346 pairs of
    69 models hold a few hundred distinct rows, and permutation importance predicts every pair n_repeats times per
    component (130 predictions of a 500-tree model: 5 of the analysis's 10 s on the published matrix). A tree
    ensemble predicts a row alone, whatever else is in the batch, so the predictions, and the importances, are
    those of the model itself (a test checks them equal).
    """

    def __init__(self, model: RegressorMixin) -> None:
        self.model = model

    def fit(self, features: pd.DataFrame, target: np.ndarray) -> "DistinctRows":
        raise NotImplementedError("DistinctRows wraps a fitted model")

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        rows, inverse = np.unique(np.asarray(features), axis=0, return_inverse=True)
        distinct = pd.DataFrame(rows, columns=features.columns) if isinstance(features, pd.DataFrame) else rows
        return self.model.predict(distinct)[inverse.reshape(-1)]
