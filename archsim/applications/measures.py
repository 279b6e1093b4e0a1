"""Other similarity measures on a finished run's models and images, and how they compare with SAT at equal compute."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import pandas as pd
import torch

from archsim import plugins
from archsim.analysis.agreement import matrix_correlations
from archsim.cache import CacheStore, atomic_write_text, digest
from archsim.data import ImageSet, load_data
from archsim.errors import ArchsimError, ParameterError
from archsim.hardware import resolve_device
from archsim.measures import (
    MEASURES,
    boundary,
    cka_matrix,
    error_consistency,
    linear_cka,
    regions,
    sat_value,
)
from archsim.measures.comparison import compare_measures, ensemble_err
from archsim.models import Purpose, SimModel, create_model
from archsim.models.features import feature_batches
from archsim.plugins import PluginWarning, load_plugins
from archsim.report.figures import matrix_scatter, write_png
from archsim.runs import RunFolder, RunSettings, SatRun, load_run
from archsim.transfer import TransferResult
from archsim.transfer.batching import (
    ResidentModels,
    batch_size_for,
    check_max_resident,
    resident_budget,
    weight_bytes,
)


class Measure(Protocol):
    """What a plugin measure (entry point group ``archsim.measures``) provides.

    ``items(models, specs, images, transfer)`` returns the per-item values, [N, N, items]
    (NaN where a pair has no value on an item), whose mean over items is the measure's
    matrix; ``models(spec)`` builds (or hands back a resident) model, ``images`` is the
    run's :class:`~archsim.data.ImageSet`, ``transfer`` the run's
    :class:`~archsim.transfer.TransferResult`. Its results are cached under ``version``,
    the models' fingerprints, the images and the seed: raise ``version`` when the
    measure changes.
    """

    description: str
    version: str
    passes_per_item: int
    """Forward or backward passes per item and pair, for the comparison at equal compute."""

    def items(
        self, models: Callable[[str], SimModel], specs: list[str], images: ImageSet, transfer: TransferResult
    ) -> np.ndarray: ...


def all_measures() -> dict[str, Any]:
    """The measures by name: archsim's with what they compute, and the :class:`Measure` objects plugins add (group
    ``archsim.measures``); a plugin without that shape is warned about and left out."""
    found: dict[str, Any] = dict(MEASURES)
    for name, plugin in load_plugins(plugins.MEASURES).items():
        if name in found:
            continue
        if not all(hasattr(plugin, a) for a in ("description", "version", "passes_per_item", "items")):
            warnings.warn(
                f"archsim plugin measure {name!r} lacks description, version, passes_per_item or items(); it is left "
                "out",
                PluginWarning,
                stacklevel=2,
            )
            continue
        found[name] = plugin
    return found


def compute_measures(
    run_dir: str | Path,
    measures: list[str],
    *,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    pair: tuple[str, str] | None = None,
    max_resident: int | str = "auto",
) -> dict[str, pd.DataFrame]:
    """Other similarity measures (docs/guide/measures.md) of a finished run's models on its images.

    Writes ``measure_<name>.csv`` in the ``sat.csv`` layout,
    ``measure_correlations.csv`` (each measure against the run's SAT, off-diagonal
    Pearson and Spearman) and, with 3 models or more, ``measure_comparison.csv``
    (docs/guide/measures.md: passes per item, spread over 200 resamples for ``pair`` at the compute
    of SAT on the run's images, rank correlation with SAT, correlation with the
    2-ensemble error reduction rate) with ``measure_comparison.png``, into ``out``
    (default ``RUN/measures``).

    Models are loaded as needed and kept while ``max_resident`` allows (as in
    :func:`archsim.runs.run_sat`; ``auto`` from the free memory), the least recently
    used leaving first, so a zoo larger than memory is measured in bounded memory. The
    images are read a batch at a time; the boundary measure streams them past a source
    and a group of resident targets at once, one pass per group.
    """
    max_resident = check_max_resident(max_resident)
    known = all_measures()
    unknown = [m for m in measures if m not in known]
    if unknown or not measures:
        raise ParameterError(
            "measures", f"unknown measure {unknown[0]!r}; choose from {', '.join(known)}" if unknown else "give {}"
        )
    folder = RunFolder(run_dir)
    settings, store = folder.settings, folder.cache(cache)
    run = load_run(run_dir, cache=store, device=device, batch_size=batch_size)
    transfer, names = run.transfer, run.transfer.names
    missing = [p for p in pair or () if p not in names]
    if missing:  # before any measure is computed
        raise ParameterError("pair", f"names {missing[0]!r}, not a model of this run ({', '.join(names)})")
    if pair is not None and pair[0] == pair[1]:
        raise ParameterError(
            "pair", f"names {pair[0]!r} twice; the spread is of a measure between two different models"
        )
    # As in the run: folder and npz data are read from the cache a batch at a time, never held whole.
    images = load_data(settings.data, split="eval", n_images=settings.n_images, seed=settings.seed, store=store)
    on = resolve_device(device)
    models = ResidentModels(
        lambda spec: create_model(spec, cache=store, device=on), resident_budget(torch.device(on), max_resident)
    )
    inputs = MeasureInputs(
        transfer=transfer,
        images=images,
        models=models,
        store=store,
        eps=settings.eps,
        seed=settings.seed,
        batch_size=batch_size,
    )
    per_item = measure_items(list(dict.fromkeys(measures)), inputs)
    matrices: dict[str, pd.DataFrame] = {}
    for measure, items in per_item.items():
        matrices[measure] = pd.DataFrame(measure_matrix(measure, items), index=names, columns=names)
    out = Path(out) if out is not None else Path(run_dir) / "measures"
    out.mkdir(parents=True, exist_ok=True)
    for measure, matrix in matrices.items():
        atomic_write_text(out / f"measure_{measure}.csv", matrix.to_csv(float_format="%.9f"))
    if len(names) >= 3:
        # the scatter shows them all; the CSV those with SAT
        every_pair = matrix_correlations({"sat": run.sat, **matrices})
        correlations = every_pair[every_pair.a == "sat"].reset_index(drop=True)
        atomic_write_text(out / "measure_correlations.csv", correlations.to_csv(index=False, float_format="%.6g"))
        comparison = comparison_table(
            run, per_item, {m: matrix.to_numpy() for m, matrix in matrices.items()}, settings, pair
        )
        atomic_write_text(out / "measure_comparison.csv", comparison.to_csv(index=False, float_format="%.6g"))
        scatter = matrix_scatter({"sat": run.sat, **matrices}, every_pair, same_scale=False, axis_label="{}")
        write_png(scatter, out / "measure_comparison.png")
        matrices["correlations"] = correlations
        matrices["comparison"] = comparison
    return matrices


def comparison_table(
    run: SatRun,
    per_item: dict[str, Any],
    matrices: dict[str, np.ndarray],
    settings: RunSettings,
    pair: tuple[str, str] | None,
) -> pd.DataFrame:
    """The comparison table of docs/guide/measures.md for the measures of one run (their per-item values and
    matrices): spread at the compute of SAT on the run's images."""
    transfer, names = run.transfer, run.transfer.names
    if pair is None:  # the pair of median SAT: neither near-copies nor strangers
        i, j = np.triu_indices(len(names), k=1)
        values = run.sat.to_numpy()[i, j]
        k = int(np.argsort(values)[len(values) // 2])
        a, b = int(i[k]), int(j[k])
    else:
        a, b = names.index(pair[0]), names.index(pair[1])
    correct, wrong = transfer.clean_correct, transfer.adv_wrong
    both = correct[a] & correct[b]
    fooled = (wrong[a, b].astype(int) + wrong[b, a].astype(int)) * both
    eps_s = settings.eps_s
    resample = {"sat": lambda idx: float(sat_value(fooled[idx].sum(), both[idx].sum(), eps_s))}
    attack = settings.attack
    attack_passes = 2 * attack.get("steps", 1) * (1 + attack.get("samples", 0))
    costs = {"sat": 2 * attack_passes + 4}
    pools = {"sat": len(both)}
    for measure, items in per_item.items():
        if measure == "cka":
            # A draw's counts weight the rows: the drawn features (budget/2 rows, often many times the set) are never
            # built.
            resample[measure] = lambda idx, f=items: linear_cka(
                f[a], f[b], weights=np.bincount(idx, minlength=len(f[a]))
            )
            costs[measure], pools[measure] = 2, len(items[a])
        elif measure == "error-consistency":
            resample[measure] = lambda idx, c=items: float(error_consistency(c[[a, b]][:, idx])[0, 1])
            costs[measure], pools[measure] = 2, items.shape[-1]
        else:
            resample[measure] = lambda idx, v=items[a, b]: (
                float(np.nanmean(v[idx])) if np.isfinite(v[idx]).any() else np.nan
            )
            pools[measure] = items.shape[-1]
            costs[measure] = {
                "disagreement": 2,
                "regions": 2 * regions.DEFAULT_RESOLUTION**2,
                "boundary": 4 + 4 * boundary.DEFAULT_POINTS,
            }.get(measure) or all_measures()[measure].passes_per_item
    table = compare_measures(
        {"sat": run.sat.to_numpy(), **matrices},
        resample,
        pools,
        costs,
        ensemble_err(transfer.clean_logits, transfer.labels),
        budget=costs["sat"] * pools["sat"],
        seed=settings.seed,
    )
    table.insert(1, "pair", f"{names[a]} ~ {names[b]}")
    return table


def measure_matrix(measure: str, items: Any) -> np.ndarray:
    """The N x N matrix of a measure from its per-item values."""
    if measure == "cka":
        return cka_matrix(items)
    if measure == "error-consistency":
        return error_consistency(items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs stay NaN
        return np.nanmean(items, axis=-1)


@dataclass(frozen=True, kw_only=True)
class MeasureInputs:
    """What the measures' per-item values are made from: a finished run's transfer result and images, its models
    (loaded within a memory budget, :class:`~archsim.transfer.batching.ResidentModels`), the cache, and the run's radius
    and seed."""

    transfer: TransferResult
    images: ImageSet
    models: ResidentModels
    store: CacheStore
    eps: float
    seed: int
    batch_size: int | str

    def sized(self, model: SimModel, purpose: Purpose = "evaluate") -> int:
        """The model's batch size for ``purpose`` on the run's images (searched once, then cached)."""
        shape = tuple(self.images.images.shape[1:])
        return batch_size_for(model, self.batch_size, purpose, shape, len(self.images), self.store)


def disagreement_items(inputs: MeasureInputs) -> np.ndarray:
    pred = inputs.transfer.clean_pred
    # bool: 69 models x 50,000 images would be 1.9 GB as floats
    return pred[:, None, :] != pred[None, :, :]


def consistency_items(inputs: MeasureInputs) -> np.ndarray:
    return inputs.transfer.clean_correct  # kappa is not a mean over images; see measure_matrix


def cka_items(inputs: MeasureInputs) -> list[np.ndarray]:
    """Memory maps of each model's cached input features: cka_matrix reads them a chunk of rows at a time."""
    store, images = inputs.store, inputs.images

    def features_of(spec: str) -> Iterator[np.ndarray]:
        model = inputs.models(spec)
        return feature_batches(model, images.images, inputs.sized(model))

    return [
        store.get_or_stream(
            "feat",
            digest("features", fp, images.fingerprint),
            "features",
            (len(images), -1),
            np.float32,
            lambda spec=spec: features_of(spec),
        ).mapped("features")
        for spec, fp in zip(inputs.transfer.specs, inputs.transfer.fingerprints, strict=True)
    ]


def regions_items(inputs: MeasureInputs) -> np.ndarray:
    """Agreement of every pair's decision regions on planes through image triplets, per plane (each model's planes
    cached)."""
    store, images = inputs.store, inputs.images
    triplets = regions.plane_triplets(images.labels.numpy(), regions.DEFAULT_TRIPLETS, inputs.seed)
    setting = (regions.DEFAULT_TRIPLETS, regions.DEFAULT_RESOLUTION, regions.MARGIN, inputs.seed)

    def planes_of(spec: str) -> dict[str, np.ndarray]:
        model = inputs.models(spec)
        return {"labels": regions.region_labels(model, images.images, triplets, batch_size=inputs.sized(model))}

    planes = [
        store.get_or_compute(
            "regions", digest("regions", fp, images.fingerprint, setting), lambda spec=spec: planes_of(spec)
        )["labels"]
        for spec, fp in zip(inputs.transfer.specs, inputs.transfer.fingerprints, strict=True)
    ]
    return regions.region_agreement(planes)


def boundary_items(inputs: MeasureInputs) -> np.ndarray:
    """The gap between every pair's decision boundaries along each source's directions, per image; each (source,
    target) row cached, the missing targets of a source computed in as few passes as memory allows."""
    specs, fingerprints, store = inputs.transfer.specs, inputs.transfer.fingerprints, inputs.store
    reach, points = 4 * inputs.eps, boundary.DEFAULT_POINTS
    distances = np.empty((len(specs), len(specs), len(inputs.images)))
    for s, (source, fp_s) in enumerate(zip(specs, fingerprints, strict=True)):
        keys = [digest("boundary", fp_s, fp_t, inputs.images.fingerprint, reach, points) for fp_t in fingerprints]
        computed: dict[int, np.ndarray] = {}

        def compute(t: int, source: str = source, keys: list[str] = keys, computed: dict = computed) -> dict:
            if t not in computed:
                todo = [u for u in range(len(specs)) if u == t or not store.contains("boundary", keys[u])]
                computed.update(boundary_along(inputs, source, todo, reach=reach, points=points))
            return {"distance": computed.pop(t)}

        for t in range(len(specs)):
            distances[s, t] = store.get_or_compute("boundary", keys[t], lambda t=t: compute(t))["distance"]
    both = inputs.transfer.clean_correct[:, None, :] & inputs.transfer.clean_correct[None, :, :]
    return boundary.boundary_gap(distances, both)


def boundary_along(
    inputs: MeasureInputs, source: str, todo: list[int], *, reach: float, points: int
) -> dict[int, np.ndarray]:
    """Distances of the targets ``todo`` along ``source``'s directions: the images streamed once past the source and
    each group of targets that fits beside it (one group where all fit)."""
    specs, model_of = inputs.transfer.specs, inputs.models
    labels = torch.as_tensor(inputs.transfer.labels)
    found: dict[int, np.ndarray] = {}
    along = model_of(source)
    group: list[tuple[int, SimModel]] = []
    held = weight_bytes(along)
    for k, u in enumerate(todo):
        target = along if specs[u] == source else model_of(specs[u])
        group.append((u, target))
        held += weight_bytes(target) if target is not along else 0
        full = len(group) + 1 >= model_of.budget.models or held >= model_of.budget.bytes
        if full or k == len(todo) - 1:
            rows = boundary.boundary_distances(
                along,
                [m for _, m in group],
                inputs.images.images,
                labels,
                reach,
                points,
                inputs.sized(along, "attack"),
                [inputs.sized(m) for _, m in group],
            )
            found.update(zip([v for v, _ in group], rows, strict=True))
            group, held = [], weight_bytes(along)
    return found


def plugin_items(inputs: MeasureInputs, measure: str) -> np.ndarray:
    """A plugin :class:`Measure`'s per-item values, cached under its version, the models, the images and the seed."""
    plugin = all_measures()[measure]
    specs = inputs.transfer.specs

    def compute() -> dict[str, np.ndarray]:
        values = np.asarray(plugin.items(inputs.models, specs, inputs.images, inputs.transfer), dtype=float)
        if values.ndim != 3 or values.shape[:2] != (len(specs), len(specs)):
            raise ArchsimError(
                f"plugin measure {measure!r} gave values of shape {values.shape}, not [{len(specs)}, {len(specs)}, "
                "items]; fix the plugin"
            )
        return {"items": values}

    fingerprints, images = inputs.transfer.fingerprints, inputs.images
    key = digest("plugin measure", measure, plugin.version, fingerprints, images.fingerprint, inputs.seed)
    return inputs.store.get_or_compute("measure", key, compute)["items"]


BUILTIN_ITEMS: dict[str, Callable[[MeasureInputs], Any]] = {
    "disagreement": disagreement_items,
    "error-consistency": consistency_items,
    "cka": cka_items,
    "regions": regions_items,
    "boundary": boundary_items,
}
"""How each of archsim's measures (:data:`archsim.measures.MEASURES`) makes its per-item values."""


def measure_items(measures: list[str], inputs: MeasureInputs) -> dict[str, Any]:
    """Per-item values of each measure, the raw material of its matrix and of its spread.

    [N, N, items] arrays (images, or planes for ``regions``) whose mean over items is
    the matrix; for ``cka`` the per-model feature matrices instead, memory-mapped from the cache.
    """
    return {
        measure: BUILTIN_ITEMS[measure](inputs) if measure in BUILTIN_ITEMS else plugin_items(inputs, measure)
        for measure in measures
    }
