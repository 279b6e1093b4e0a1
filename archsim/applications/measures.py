"""Other similarity measures on a finished run's models and images, and how they compare with SAT at equal compute."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import pandas as pd
import torch

from archsim import plugins
from archsim.analysis.agreement import matrix_correlations
from archsim.cache import CacheStore, atomic_write_text
from archsim.data import ImageSet, load_data
from archsim.errors import ParameterError
from archsim.hardware import resolve_device
from archsim.measures import (
    sat_value,
)
from archsim.measures.comparison import compare_measures, ensemble_err
from archsim.measures.on_run import BUILTIN, MeasureInputs, PluginMeasure, RunMeasure
from archsim.models import SimModel, create_model
from archsim.plugins import PluginWarning, load_plugins
from archsim.report.figures import matrix_scatter, write_png
from archsim.runs import RunFolder, RunSettings, SatRun, load_run
from archsim.transfer import TransferResult
from archsim.transfer.batching import (
    ResidentModels,
    check_max_resident,
    resident_budget,
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


def all_measures() -> dict[str, RunMeasure]:
    """The measures by name: archsim's (:data:`archsim.measures.on_run.BUILTIN`) and those plugins add (group
    ``archsim.measures``, objects of the :class:`Measure` shape); a plugin without that shape is warned about and left
    out."""
    found: dict[str, RunMeasure] = dict(BUILTIN)
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
        found[name] = PluginMeasure(name, plugin)
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
    per_item = {measure: known[measure].items(inputs) for measure in dict.fromkeys(measures)}
    matrices = {
        measure: pd.DataFrame(known[measure].matrix(items), index=names, columns=names)
        for measure, items in per_item.items()
    }
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
            run, per_item, {m: matrix.to_numpy() for m, matrix in matrices.items()}, known, settings, pair
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
    measures: dict[str, RunMeasure],
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
        resample[measure], pools[measure] = measures[measure].resampler(items, a, b)
        costs[measure] = measures[measure].passes_per_item
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
