"""The attack radius at which a run agrees best with a published SAT matrix.

The SAT paper fixes a radius, but the copy of its text we work from lost it, and its release states no attack
settings. A published matrix constrains it all the same: a larger radius fools more, raising every SAT and the
white-box diagonal. :func:`calibrate_radius` runs a finished run's models, images, seed and attack at each radius of
a grid (cached, as any run) and compares each matrix with the published entries of the models both name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from archsim.analysis.matrix import read_matrix
from archsim.cache import CacheStore, atomic_write_text
from archsim.engines import Engine, engine_for
from archsim.errors import ParameterError
from archsim.report.figures import calibration_figure, write_png
from archsim.runs import RunFolder, run_sat
from archsim.specs import check_eps, whole_levels


@dataclass
class Calibration:
    """Result of :func:`calibrate_radius`: per radius, the agreement with the published matrix; the best radius."""

    table: pd.DataFrame
    best_eps: float
    models: list[str]
    matrices: dict[float, pd.DataFrame]
    published: str = "the published matrix"

    def summary(self) -> str:
        """What ``archsim calibrate`` prints: the agreement at each radius and the best radius."""
        return "\n".join(
            [
                f"the run at each radius against {self.published} ({len(self.models)} models in both):",
                self.table.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
                f"best radius: {round(self.best_eps * 255)}/255 = {self.best_eps:.6f}",
            ]
        )


def calibrate_radius(
    run_dir: str | Path,
    published: str | Path,
    radii: Sequence[float],
    *,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> Calibration:
    """Run a finished run at each radius of ``radii`` and compare each matrix with ``published``.

    Parameters
    ----------
    run_dir : path
        A finished run: its models, data, images, seed, attack (eps aside), precision and views.
    published : path
        A SAT matrix in the sat.csv layout (e.g. the paper's ``SAT_release.csv``); models are matched by name.
    radii : sequence of float
        The grid, in [0, 1] pixel units; each is rounded to whole levels of 1/255 as a run rounds it.
    out : path, optional
        Where ``calibration.csv`` and ``calibration.png`` go (default ``RUN/calibration``; the run's report shows
        them).

    Returns
    -------
    Calibration
        ``table``: per radius, the pairs compared, the mean absolute SAT difference over them, Spearman's rho and
        its p-value, and the mean white-box diagonal of the run and of the published matrix; ``best_eps``: the radius
        of the smallest mean absolute difference.
    """
    folder = RunFolder(run_dir)
    settings = folder.settings
    reference = read_matrix(published, allow_nan=True)
    grid = sorted({whole_levels(check_eps(r))[0] for r in radii})
    if len(grid) < 2:
        raise ParameterError("radii", "give at least two different radii (whole levels of 1/255 apart) to compare")
    names = [name for name in folder.models["model"] if name in reference.index]
    if len(names) < 3:
        raise ParameterError(
            "published",
            f"{{}} names {len(names)} of the run's models; the comparison needs at least 3 (models are matched by "
            "name: give the run's models the published names with ,name=)",
        )
    store = folder.cache(cache)
    matrices, rows = {}, []
    with engine_for(engine, device, address) as runner:
        for eps in grid:
            run = run_sat(
                settings.models,
                data=settings.data,
                n_images=settings.n_images,
                attack=folder.attack_spec,
                eps=eps,
                seed=settings.seed,
                eps_s=settings.eps_s,
                n_boot=0,
                device=device,
                batch_size=batch_size,
                cache=store,
                engine=runner,
                precision=folder.precision,
                views=folder.views,
                keep_going=settings.keep_going,
            )
            matrices[eps] = run.sat
            rows.append({"eps": eps, "levels": round(eps * 255), **agreement(run.sat, reference, names)})
    table = pd.DataFrame(rows)
    ranked = table.dropna(subset=["mean_abs_diff"])
    if ranked.empty:
        raise ParameterError("published", "{} shares no defined SAT entry with the run at any radius")
    best = float(ranked.sort_values(["mean_abs_diff", "eps"]).iloc[0]["eps"])
    table["best"] = table["eps"] == best
    out = Path(out) if out is not None else folder.path / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "calibration.csv", table.to_csv(index=False, float_format="%.6g"))
    write_png(calibration_figure(table), out / "calibration.png")
    return Calibration(table=table, best_eps=best, models=names, matrices=matrices, published=str(published))


def agreement(sat: pd.DataFrame, reference: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """How a run's matrix agrees with a published one on ``names``: off-diagonal pairs with both entries defined,
    their mean absolute difference and Spearman correlation; each matrix's mean white-box diagonal (ln %)."""
    ours = sat.loc[names, names].to_numpy(dtype=float)
    theirs = reference.loc[names, names].to_numpy(dtype=float)
    off = ~np.eye(len(names), dtype=bool) & np.isfinite(ours) & np.isfinite(theirs)
    rho, p = spearmanr(ours[off], theirs[off]) if off.sum() >= 3 else (np.nan, np.nan)
    return {
        "pairs": int(off.sum()),
        "mean_abs_diff": float(np.abs(ours[off] - theirs[off]).mean()) if off.any() else np.nan,
        "spearman": float(rho),
        "spearman_p": float(p),
        "white_box_mean": float(np.nanmean(np.diag(ours))),
        "published_white_box_mean": float(np.nanmean(np.diag(theirs))),
    }
