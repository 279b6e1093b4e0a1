"""Training strategy vs architecture (docs/method.md#analysis): mean SAT within and across architectures.

The paper's Table 2 compares three strategies of training one architecture (initialisation, hyper-parameters, training
regime) with pairs of different architectures. Its means are over percentages: the off-diagonal mean of the published
69-model matrix is 2.665 as a mean of SAT, and 2.721 as the ln of the mean percentage of images fooled, the paper's
2.73 (:func:`mean_both_ways`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

# The SAT paper's means for the same comparisons on ImageNet, for orientation only.
PAPER_MEANS = {
    "different seeds": 4.2,
    "different hyper-parameters": np.nan,
    "different training regimes": 3.3,
    "different architectures": 2.7,
}


def pair_relation(a: pd.Series, b: pd.Series) -> str:
    """How two models differ: by seed only, by hyper-parameters within a regime, by training regime, by architecture,
    or unknown. ``hparams`` labels (may be empty) tell hyper-parameters apart; where either model has none, a pair of
    one regime is compared by seed alone."""
    if a["architecture"] != b["architecture"]:
        return "different architectures"
    if a["regime"] and b["regime"] and a["regime"] != b["regime"]:
        return "different training regimes"
    if a["regime"] != b["regime"] or not a["regime"]:
        return "same architecture, other differences"
    if a["hparams"] and b["hparams"] and a["hparams"] != b["hparams"]:
        return "different hyper-parameters"
    if pd.notna(a["seed"]) and pd.notna(b["seed"]) and a["seed"] != b["seed"]:
        return "different seeds"
    return "same architecture, other differences"


def mean_both_ways(values) -> tuple[float, float]:
    """The mean of SAT values, and the ln of the mean percentage of images fooled that they stand for (ln of the mean
    of exp(SAT)): the paper's averages are the second kind."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(np.log(np.exp(values).mean()))


def relation_groups(sat: pd.DataFrame, models: pd.DataFrame) -> dict[str, list[float]]:
    """Off-diagonal SAT of every pair of ``sat``'s models, grouped by :func:`pair_relation`.

    ``models`` needs columns model, architecture, regime, seed (``models.csv`` of a run).
    """
    info = models.set_index("model").loc[list(sat.index)]
    info["regime"] = info["regime"].astype(object).fillna("").astype(str)
    # Run folders written before hparams existed have no such column: every model unlabelled.
    info["hparams"] = (
        info.get("hparams", pd.Series(index=info.index, dtype=object)).astype(object).fillna("").astype(str)
    )
    names = list(sat.index)
    groups: dict[str, list[float]] = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            groups.setdefault(pair_relation(info.iloc[i], info.iloc[j]), []).append(float(sat.iat[i, j]))
    return groups


def summarise(groups: dict[str, list[float]]) -> pd.DataFrame:
    """Pairs, mean (both ways, :func:`mean_both_ways`) and spread of SAT per relation, the paper's relations first."""
    order = [*PAPER_MEANS, *(name for name in groups if name not in PAPER_MEANS)]
    return pd.DataFrame(
        [
            {
                "comparison": name,
                "pairs": len(groups[name]),
                "mean_sat": mean_both_ways(groups[name])[0],
                "ln_mean_percent": mean_both_ways(groups[name])[1],
                "std_sat": float(np.nanstd(groups[name])),
                "paper_mean_sat": PAPER_MEANS.get(name, np.nan),
            }
            for name in order
            if name in groups
        ]
    )


def training_vs_architecture(sat: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame | None:
    """Mean and spread of off-diagonal SAT per relation; None without any same-architecture pair.

    ``models`` needs columns model, architecture, regime, seed (``models.csv`` of a run).
    """
    groups = relation_groups(sat, models)
    if set(groups) <= {"different architectures"}:
        return None
    return summarise(groups)
