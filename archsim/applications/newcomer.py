"""A new model against a finished run (SPEC §2.8): its SAT row and column, and its cluster.

Only the newcomer is attacked; every existing adversarial set, clean prediction
and cross prediction comes from the cache, so the cost is one attack plus 2N + 2
forward passes over the images (the newcomer on every set and every existing
model on the newcomer's set), not the (N + 1)^2 of a recompute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from archsim.api import SatRun, _run_settings, claimed_run_dir, load_run, require_cached, write_run
from archsim.cache import CacheStore, atomic_write_text
from archsim.engines import Engine
from archsim.errors import ArchsimError
from archsim.models import create_model


@dataclass
class Newcomer:
    """Result of :func:`add_model`."""

    name: str
    run: SatRun
    row: pd.DataFrame
    """One row per existing model: ``sat`` (symmetric), ``one_sided_sat`` (only the newcomer's
    attack, evaluated on the existing model), ``cluster``."""
    clusters: pd.DataFrame
    """Per existing cluster: its members' mean SAT with the newcomer; ``assigned`` marks the highest."""
    out: Path


def assign_cluster(sat_row: pd.Series, clusters: pd.Series) -> pd.DataFrame:
    """Mean SAT of the newcomer with each cluster's members; the newcomer joins the highest.

    SAT is the spectral clustering's affinity, so the cluster it shares most
    affinity with per member is where a reclustering would most likely put it, while
    the existing clusters stay as they are.
    """
    table = pd.DataFrame({"sat": sat_row, "cluster": clusters.reindex(sat_row.index)})
    per_cluster = table.groupby("cluster")["sat"].agg(mean_sat="mean", members="size").reset_index()
    per_cluster["assigned"] = per_cluster["mean_sat"] == per_cluster["mean_sat"].max()
    return per_cluster.sort_values("mean_sat", ascending=False, kind="stable").reset_index(drop=True)


def add_model(
    run_dir: str | Path,
    spec: str,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> Newcomer:
    """Add ``spec`` to the run in ``run_dir``; write the N+1-model run into ``out``.

    ``out`` (default ``RUN/added/<name>``) becomes a complete run folder of the N+1
    models (``sat.csv``, ``pairs.csv``, ... as ``archsim run`` writes them, so it can
    be analysed or extended again) plus ``newcomer.csv`` and
    ``newcomer_clusters.csv``. The original run folder is not modified. ``engine``
    and ``address`` as in :func:`archsim.api.run_sat`.
    """
    run_dir = Path(run_dir)
    settings = _run_settings(run_dir)
    store = cache if isinstance(cache, CacheStore) else CacheStore(cache if cache is not None else settings.get("cache"))
    require_cached(run_dir, store)  # before the newcomer is loaded (a zoo model may train first)
    known = pd.read_csv(run_dir / "models.csv")
    if spec in settings["models"]:
        raise ArchsimError(f"{spec} is already in the run {run_dir}; add a model that is not in it")
    model = create_model(spec, cache=store, device="cpu")  # for its name and fingerprint only
    if model.name in set(known["model"]):
        raise ArchsimError(f"the run {run_dir} already has a model named {model.name!r}; give the newcomer another name with ,name=OTHER")
    same = known.loc[known["fingerprint"] == model.fingerprint, "model"]
    if len(same):
        raise ArchsimError(f"{spec} has the same weights and preprocessing as {same.iloc[0]!r}, already in the run {run_dir}")
    out_dir = Path(out) if out is not None else run_dir / "added" / model.name
    del model
    new_settings = {**settings, "models": settings["models"] + [spec]}
    with claimed_run_dir(out_dir, new_settings):  # before any attack: a wrong --out is refused up front
        run = load_run(run_dir, store, device, batch_size, models=[spec], engine=engine, address=address)
        write_run(out_dir, run)

    name = run.transfer.names[-1]
    others = run.transfer.names[:-1]
    clusters_file = run_dir / "clusters.csv"
    if clusters_file.is_file():
        clusters = pd.read_csv(clusters_file, index_col="model")["cluster"]
    else:
        from archsim.analysis import spectral_clusters

        clusters = spectral_clusters(run.sat.loc[others, others]).labels
    row = pd.DataFrame({
        "model": others,
        "sat": run.sat.loc[name, others].to_numpy(),
        "one_sided_sat": run.one_sided.loc[name, others].to_numpy(),
        "cluster": clusters.reindex(others).to_numpy(),
    })
    assignment = assign_cluster(run.sat.loc[name, others], clusters)
    atomic_write_text(out_dir / "newcomer.csv", row.to_csv(index=False, float_format="%.9f"))
    atomic_write_text(out_dir / "newcomer_clusters.csv", assignment.to_csv(index=False, float_format="%.6f"))
    return Newcomer(name, run, row, assignment, out_dir)

