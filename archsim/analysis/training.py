"""Training strategy vs architecture (SPEC §2.5): mean SAT within and across architectures."""

from __future__ import annotations

import numpy as np
import pandas as pd

# The SAT paper's means for the same comparisons on ImageNet, for orientation only.
PAPER_MEANS = {"different seeds": 4.2, "different training regimes": 3.3, "different architectures": 2.7}


def pair_relation(a: pd.Series, b: pd.Series) -> str:
    """How two models differ: by seed only, by training regime, by architecture, or unknown."""
    if a["architecture"] != b["architecture"]:
        return "different architectures"
    if a["regime"] and b["regime"] and a["regime"] != b["regime"]:
        return "different training regimes"
    if (
        a["regime"] == b["regime"]
        and a["regime"]
        and pd.notna(a["seed"])
        and pd.notna(b["seed"])
        and a["seed"] != b["seed"]
    ):
        return "different seeds"
    return "same architecture, other differences"


def relation_groups(sat: pd.DataFrame, models: pd.DataFrame) -> dict[str, list[float]]:
    """Off-diagonal SAT of every pair of ``sat``'s models, grouped by :func:`pair_relation`.

    ``models`` needs columns model, architecture, regime, seed (``models.csv`` of a run).
    """
    info = models.set_index("model").loc[list(sat.index)]
    info["regime"] = info["regime"].astype(object).fillna("").astype(str)
    names = list(sat.index)
    groups: dict[str, list[float]] = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            groups.setdefault(pair_relation(info.iloc[i], info.iloc[j]), []).append(float(sat.iat[i, j]))
    return groups


def summarise(groups: dict[str, list[float]]) -> pd.DataFrame:
    """Pairs, mean and spread of SAT per relation, the paper's relations first."""
    order = [*PAPER_MEANS, *(name for name in groups if name not in PAPER_MEANS)]
    return pd.DataFrame(
        [
            {
                "comparison": name,
                "pairs": len(groups[name]),
                "mean_sat": float(np.nanmean(groups[name])),
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
