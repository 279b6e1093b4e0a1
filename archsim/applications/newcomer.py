"""A new model against a finished run (docs/method.md#decisions): its SAT row and column, and its cluster.

Only the newcomer is attacked; every existing adversarial set, clean prediction
and cross prediction comes from the cache, so the cost is one attack plus 2N + 2
forward passes over the images (the newcomer on every set and every existing
model on the newcomer's set), not the (N + 1)^2 of a recompute.

The one-sided path (the SAT paper's approximation, for when the zoo's adversarial
sets are not at hand) attacks the newcomer only and evaluates the zoo's models on its
set: N + 1 forward passes, and the cluster is assigned from the one-sided SAT. How far
that approximation holds is measured on the run itself (:func:`one_sided_agreement`):
the paper reports a correlation of 0.82 between one-sided and symmetric SAT.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from archsim.attacks import create_attack
from archsim.cache import CacheStore, atomic_write_text
from archsim.data import load_data
from archsim.engines import Engine
from archsim.errors import ArchsimError, ParameterError
from archsim.measures import sat_value
from archsim.models import ModelObject, create_model, model_specs
from archsim.models.objects import keep_modules
from archsim.params import AUTO
from archsim.report.text import table_text
from archsim.runs import RunFolder, SatRun, load_run


@dataclass
class Newcomer:
    """Result of :func:`add_model`."""

    name: str
    run: SatRun | None
    """The N+1-model run; None on the one-sided path, which makes no full run."""
    row: pd.DataFrame
    """One row per existing model: ``sat`` (symmetric; absent on the one-sided path), ``one_sided_sat``
    (only the newcomer's attack, evaluated on the existing model), ``cluster``."""
    clusters: pd.DataFrame
    """Per existing cluster: its members' mean SAT with the newcomer; ``assigned`` marks the highest."""
    out: Path
    agreement: dict
    """How one-sided SAT stands for the symmetric one on the run (:func:`one_sided_agreement`)."""
    cache_hits: int = 0
    cache_misses: int = 0

    def summary(self, run_dir: str | Path) -> str:
        """What ``archsim add`` prints: the newcomer's row against the models of ``run_dir``, the cluster it joins,
        and how one-sided SAT stands for the symmetric one."""
        one_sided = self.run is None
        joined = self.clusters[self.clusters["assigned"]].iloc[0]
        by = "one-sided SAT" if one_sided else "SAT"
        agreement = self.agreement
        lines = [
            f"{self.name} against the {len(self.row)} models of {run_dir}:",
            table_text(self.row.sort_values("one_sided_sat" if one_sided else "sat", ascending=False)),
            f"\njoins cluster {int(joined['cluster'])} (mean {by} {joined['mean_sat']:.2f} with its "
            f"{int(joined['members'])} members)",
            f"one-sided against symmetric SAT on the run: Pearson {agreement['pearson']:.2f}, Spearman "
            f"{agreement['spearman']:.2f} over {agreement['pairs']} pairs (the paper: 0.82); "
            f"{100 * agreement['same_cluster_share']:.0f}% of the run's {agreement['models_checked']} models join the "
            "same cluster either way",
        ]
        if "newcomer_same_cluster" in agreement:
            lines.append(
                f"this newcomer: Pearson {agreement['newcomer_pearson']:.2f}; same cluster either way: "
                f"{agreement['newcomer_same_cluster']}"
            )
        return "\n".join(lines)


def one_sided_agreement(sat: pd.DataFrame, one_sided: pd.DataFrame, clusters: pd.Series) -> dict:
    """How well one-sided SAT stands for SAT on a run: Pearson and Spearman over the ordered pairs of distinct
    models, and the share of models that, left out of the clusters in turn, join the same cluster by their
    one-sided row (their attack on the others) as by their symmetric row."""
    names = list(sat.index)
    off = ~np.eye(len(names), dtype=bool)
    x, y = one_sided.loc[names, names].to_numpy()[off], sat.to_numpy()[off]
    finite = np.isfinite(x) & np.isfinite(y)
    same = []
    for name in names:
        others = [m for m in names if m != name]
        if clusters.reindex(others).nunique() < 2:
            continue
        by_sat = assign_cluster(sat.loc[name, others], clusters)
        by_one = assign_cluster(one_sided.loc[name, others], clusters)
        same.append(by_sat.loc[by_sat.assigned, "cluster"].iloc[0] == by_one.loc[by_one.assigned, "cluster"].iloc[0])
    enough = finite.sum() > 2
    return {
        "pairs": int(finite.sum()),
        "pearson": float(pearsonr(x[finite], y[finite])[0]) if enough else float("nan"),
        "spearman": float(spearmanr(x[finite], y[finite])[0]) if enough else float("nan"),
        "same_cluster_share": float(np.mean(same)) if same else float("nan"),
        "models_checked": len(same),
    }


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
    spec: str | ModelObject | Mapping[str, ModelObject],
    *,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
    one_sided: bool = False,
) -> Newcomer:
    """Add ``spec`` to the run in ``run_dir``; write the N+1-model run into ``out``.

    ``spec`` is a model spec, or a module given in Python: alone, as ``(module, preprocessing)`` or as a one-item
    ``{name: model}`` mapping (see :func:`archsim.models.model_specs`); a module is saved into the cache with the
    N+1-model run, as :func:`archsim.runs.run_sat` saves those of a run.

    ``out`` (default ``RUN/added/<name>``) becomes a complete run folder of the N+1
    models (``sat.csv``, ``pairs.csv``, ... as ``archsim run`` writes them, so it can
    be analysed or extended again) plus ``newcomer.csv`` and
    ``newcomer_clusters.csv``. The original run folder is not modified. ``engine``
    and ``address`` as in :func:`archsim.runs.run_sat`.

    ``one_sided=True`` needs none of the run's adversarial sets: only the newcomer is
    attacked, the run's models are evaluated on its set, and the cluster is assigned from
    the one-sided SAT. ``out`` then holds ``newcomer.csv``, ``newcomer_clusters.csv`` and
    ``one_sided_agreement.csv``, not a run folder.
    """
    if not isinstance(spec, str):
        given = spec if isinstance(spec, Mapping) else [spec]
        if len(given) != 1:
            raise ParameterError("spec", f"names {len(given)} models; add one at a time")
        spec = model_specs(given)[0]
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    settings, store = folder.settings, folder.cache(cache)
    if not one_sided:
        folder.require_cached(store)  # before the newcomer is loaded (a zoo model may train first)
    known = folder.models
    if spec in settings.models:
        raise ArchsimError(f"{spec} is already in the run {run_dir}; add a model that is not in it")
    model = create_model(spec, cache=store, device="cpu")  # for its name and fingerprint only
    if model.name in set(known["model"]):
        raise ArchsimError(
            f"the run {run_dir} already has a model named {model.name!r}; give the newcomer another name with "
            f",name=OTHER"
        )
    same = known.loc[known["fingerprint"] == model.fingerprint, "model"]
    if len(same):
        raise ArchsimError(
            f"{spec} has the same weights and preprocessing as {same.iloc[0]!r}, already in the run {run_dir}"
        )
    out_dir = Path(out) if out is not None else run_dir / "added" / model.name
    del model
    clusters = _run_clusters(run_dir)
    agreement = one_sided_agreement(*_run_matrices(run_dir), clusters)
    if one_sided:
        return _add_one_sided(
            run_dir, settings, spec, known, clusters, agreement, out_dir, store, device, batch_size, engine, address
        )
    new_settings = replace(settings, models=(*settings.models, spec))
    with RunFolder(out_dir).claim(new_settings) as added:  # before any attack: a wrong --out is refused up front
        run = load_run(
            run_dir, cache=store, device=device, batch_size=batch_size, models=[spec], engine=engine, address=address
        )
        run.cache_used |= keep_modules([spec], store)
        added.write(run)

    name = run.transfer.names[-1]
    others = run.transfer.names[:-1]
    row = pd.DataFrame(
        {
            "model": others,
            "sat": run.sat.loc[name, others].to_numpy(),
            "one_sided_sat": run.one_sided.loc[name, others].to_numpy(),
            "cluster": clusters.reindex(others).to_numpy(),
        }
    )
    assignment = assign_cluster(run.sat.loc[name, others], clusters)
    atomic_write_text(out_dir / "newcomer.csv", row.to_csv(index=False, float_format="%.9f"))
    atomic_write_text(out_dir / "newcomer_clusters.csv", assignment.to_csv(index=False, float_format="%.6f"))
    by_one = assign_cluster(run.one_sided.loc[name, others], clusters)
    agreement = {
        **agreement,
        "newcomer_pearson": float(pearsonr(row.one_sided_sat, row.sat)[0]) if row.sat.nunique() > 1 else float("nan"),
        "newcomer_same_cluster": bool(
            by_one.loc[by_one.assigned, "cluster"].iloc[0] == assignment.loc[assignment.assigned, "cluster"].iloc[0]
        ),
    }
    atomic_write_text(out_dir / "one_sided_agreement.csv", pd.Series(agreement).to_frame("value").to_csv())
    return Newcomer(name, run, row, assignment, out_dir, agreement, run.cache_hits, run.cache_misses)


def _run_matrices(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's SAT and one-sided SAT matrices (the latter from pairs.csv: source's attack on the target)."""
    folder = RunFolder(run_dir)
    sat, pairs = folder.sat, folder.pairs
    one = pairs.pivot(index="source", columns="target", values="one_sided_sat").loc[sat.index, sat.columns]
    return sat, one


def _run_clusters(run_dir: Path) -> pd.Series:
    clusters_file = run_dir / "clusters.csv"
    if clusters_file.is_file():
        return pd.read_csv(clusters_file, index_col="model")["cluster"]
    from archsim.analysis import spectral_clusters

    return spectral_clusters(RunFolder(run_dir).sat).labels


def _add_one_sided(
    run_dir: Path,
    settings: dict,
    spec: str,
    known: pd.DataFrame,
    clusters: pd.Series,
    agreement: dict,
    out_dir: Path,
    store: CacheStore,
    device: str,
    batch_size: int | str,
    engine: str | Engine,
    address: str | None,
) -> Newcomer:
    """The newcomer attacked alone; the run's models evaluated on its set (their clean predictions from the cache)."""
    from archsim.engines import engine_for
    from archsim.labels import predicted_labels
    from archsim.transfer.stages import (
        SourceOutcome,
        attack_source,
        evaluate_targets,
        pred_key,
        stacked_logits,
    )

    folder = RunFolder(run_dir)
    precision = folder.precision
    images = load_data(
        settings.data,
        split="eval",
        n_images=settings.n_images,
        seed=settings.seed,
        store=store,
        views=folder.views,
    )
    attack = create_attack(folder.attack_spec, eps=settings.eps)
    labels = images.labels.numpy()
    names, specs, fingerprints = list(known["model"]), list(known["spec"]), list(known["fingerprint"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with engine_for(engine, device, address) as runner:
        newcomer: SourceOutcome = runner.map(
            attack_source,
            [(spec, images, attack, settings.seed, batch_size, None, precision, False)],
            store,
            "attack newcomer",
            [spec],
        )[0]
        # The run's models' clean predictions: from the run's cache entries where present, else one forward pass each.
        keys = [pred_key(fp, images.key, precision) for fp in fingerprints]
        missing = [i for i, key in enumerate(keys) if not store.contains("pred", key)]
        if missing:
            runner.map(
                _clean_logits,
                [(specs[i], fingerprints[i], images, batch_size, precision) for i in missing],
                store,
                "clean predictions",
                [names[i] for i in missing],
            )
        correct = predicted_labels(stacked_logits(store, [newcomer.clean_key, *keys])) == labels[None, :]
        outcome = runner.map(
            evaluate_targets,
            [
                (
                    list(zip(specs, fingerprints, strict=True)),
                    [newcomer.adv_key],
                    [(correct[0] & correct[1 + t])[None, :] for t in range(len(names))],
                    tuple(images.images.shape[1:]),
                    batch_size,
                    precision,
                    False,
                    AUTO,
                    images.views == "own",
                )
            ],
            store,
            "evaluate the run's models",
            ["run models"],
        )[0]
    fooled = np.array(
        [((outcome.predictions[t][0] != labels) & (outcome.predictions[t][0] >= 0)).sum() for t in range(len(names))]
    )
    both = np.array([(correct[0] & correct[1 + t]).sum() for t in range(len(names))])
    one_sided = pd.Series(sat_value(fooled, both, settings.eps_s, sides=1), index=names)
    row = pd.DataFrame(
        {
            "model": names,
            "one_sided_sat": one_sided.to_numpy(),
            "n_both_correct": both,
            "cluster": clusters.reindex(names).to_numpy(),
        }
    )
    assignment = assign_cluster(one_sided, clusters)
    atomic_write_text(out_dir / "newcomer.csv", row.to_csv(index=False, float_format="%.9f"))
    atomic_write_text(out_dir / "newcomer_clusters.csv", assignment.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out_dir / "one_sided_agreement.csv", pd.Series(agreement).to_frame("value").to_csv())
    return Newcomer(newcomer.name, None, row, assignment, out_dir, agreement, store.hits, store.misses)


def _clean_logits(
    device: str, store: CacheStore, spec: str, fingerprint: str, images, batch_size: int | str, precision: str
) -> None:
    """Engine task: cache one run model's clean logits (as its attack task would) without attacking it."""
    from archsim.models import prepare
    from archsim.transfer.stages import cache_clean_logits

    # prepared as its attack task prepares it
    model = prepare(create_model(spec, cache=store, device=device), precision)
    if model.fingerprint != fingerprint:
        raise ArchsimError(f"model {spec} has other weights than when the run was made; rerun the run")
    cache_clean_logits(model, images, store, batch_size, precision)
