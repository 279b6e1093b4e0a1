"""The Python API: the same job as ``archsim run``, returning tables."""

from __future__ import annotations

import json
import platform
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import sklearn
import timm
import torch
import torchvision
from filelock import FileLock, Timeout

import archsim
from archsim.analysis.cards import cards_table
from archsim.analysis.extract import extract_card
from archsim.attacks import create_attack
from archsim.cache import CacheStore, atomic_write_text, check_cache, digest
from archsim.data import load_data
from archsim.engines import Engine, engine_for
from archsim.errors import ArchsimError
from archsim.measures import DEFAULT_EPS_S, sat_tables
from archsim.models import check_model_specs, check_precision, create_model, default_precision, zoo_specs
from archsim.transfer import TransferResult, run_transfer
from archsim.specs import check_seed
from archsim.transfer.batching import Purpose, batch_size_for, check_batch_size, check_max_resident

DIGITS_EPS = 0.1
"""Default radius on ``digits``: 25/255 levels. Chosen so that PGD fools every zoo model
white-box while transfer between families stays well below 100 %, keeping SAT informative."""

IMAGENET_EPS = 4 / 255
"""Default radius on natural-image data (imagefolder, imagenet-val, npz): the customary
4/255 of transfer studies. The SAT paper's text as we read it does not fix one; set --eps to match yours."""

RUN_LOCK = ".archsim.lock"
"""Held in a run folder while a run writes into it (:func:`claimed_run_dir`)."""
RUN_FILES = ("sat.csv", "pairs.csv", "models.csv", "cards.csv", "cache_entries.txt", "config.json")


def default_eps(data: str) -> float:
    return DIGITS_EPS if data.split(":")[0].split(",")[0] == "digits" else IMAGENET_EPS


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArchsimError("--device cuda asked for but no CUDA GPU is visible; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ArchsimError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return device


@dataclass
class SatRun:
    """Result of :func:`run_sat`."""

    sat: pd.DataFrame
    one_sided: pd.DataFrame
    pairs: pd.DataFrame
    models: pd.DataFrame
    config: dict[str, Any]
    transfer: TransferResult
    cache_hits: int
    cache_misses: int
    cards: pd.DataFrame
    cache_used: set[tuple[str, str]]

    @property
    def timings(self) -> pd.DataFrame:
        """Per model: seconds to load, predict clean, attack and evaluate, and their rates (0 where cached)."""
        return self.transfer.timings


def run_sat(
    models: list[str] | None = None,
    data: str = "digits",
    n_images: int | None = None,
    attack: str = "pgd",
    eps: float | None = None,
    steps: int | None = None,
    rel_step: float | None = None,
    random_start: bool | None = None,
    seed: int = 0,
    eps_s: float = DEFAULT_EPS_S,
    n_boot: int = 1000,
    device: str = "auto",
    batch_size: int | str = "auto",
    cache: CacheStore | str | Path | None = None,
    out: str | Path | None = None,
    engine: str | Engine = "local",
    address: str | None = None,
    precision: str = "auto",
    compile: bool = False,
    keep_going: bool = False,
    max_resident: int | str = "auto",
    attack_seeds: int = 1,
    check_models: bool = True,
) -> SatRun:
    """Compute the SAT matrix of a set of models on a data set.

    Parameters
    ----------
    models : list of str, optional
        Model specs (see :func:`archsim.models.create_model`); default: the embedded zoo.
    data : str
        Data spec (see :func:`archsim.data.load_data`).
    n_images : int, optional
        Seeded, class-stratified subset size.
    attack : str
        ``NAME[,key=value...]``, e.g. ``pgd`` (SPEC §1), ``apgd-ce,steps=100``; see
        :data:`archsim.attacks.ATTACKS`.
    eps, steps, rel_step, random_start
        Attack options; ``None`` keeps the attack's default (``eps``: :func:`default_eps`
        of the data). An option the attack does not take is an error.
    seed : int
        Seed of the subset, random starts and sampling, and the bootstrap.
    eps_s : float
        Floor of the fooling percentage in SAT (default 1 %, i.e. SAT >= 0).
    n_boot : int
        Bootstrap replicates for the 95 % intervals.
    device : str
        ``auto``, ``cpu`` or ``cuda[:N]`` (see :func:`archsim.engines.create_engine` under Ray).
    cache : CacheStore or path, optional
        Result store (default ``$ARCHSIM_CACHE`` or ``~/.cache/archsim``); under Ray, a
        folder every node mounts.
    out : path, optional
        Run folder to write ``sat.csv``, ``pairs.csv``, ``models.csv``, ``config.json``.
    engine : str or Engine
        ``local`` (default), ``ray``, or an engine from :func:`archsim.engines.create_engine`
        (which the caller then closes). The results do not depend on it.
    address : str, optional
        Ray cluster address with ``engine="ray"``.
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of attacks and predictions; ``auto`` is bf16 autocast on CUDA and fp32
        on the CPU (:func:`archsim.models.default_precision` says why). bf16 results are
        cached apart from fp32 ones and recorded in the run's settings.
    compile : bool
        Run the models through ``torch.compile`` (pays off on GPUs over many batches).
    keep_going : bool
        Leave out models that fail the check every model gets before any attack (one
        forward and backward pass, prepared as the run will run them), instead of
        stopping; ``config["left_out"]`` and the report name them and why.
    max_resident : int or "auto"
        Targets evaluation keeps loaded at once (per Ray task); each adversarial set is
        read once per such group. ``auto``: as many as fit a share of the free memory
        (:func:`archsim.transfer.batching.resident_budget`).
    attack_seeds : int
        Attack with this many seeds (``seed``, ``seed + 1``, ...: the random starts change,
        the images do not), to measure the attack's own noise, which the bootstrap over
        images does not cover. ``sat`` and the intervals stay those of ``seed``; ``pairs``
        gains ``sat_seed_mean``, ``sat_seed_sd``, ``sat_seed_min`` and ``sat_seed_max``, and
        ``config["attack_seed_noise"]`` the rank correlation between the seeds' matrices.
    check_models : bool
        Check every model (one forward and backward pass) before any attack; ``False``
        for models checked already (:func:`load_run` on a finished run).
    """
    specs = list(models) if models else zoo_specs()
    if len(specs) < 2:
        raise ArchsimError("SAT needs at least two models; pass more --models")
    if len(set(specs)) != len(specs):
        raise ArchsimError("a model spec is given twice; list each model once")
    check_model_specs(specs)  # before the out folder is claimed and the data read (hashing a folder takes minutes)
    if not eps_s > 0:
        raise ArchsimError(f"--eps-s must be positive (a percentage floor), got {eps_s}")
    if n_boot < 0:
        raise ArchsimError(f"--n-boot must be 0 or more, got {n_boot}")
    batch_size = check_batch_size(batch_size)
    max_resident = check_max_resident(max_resident)
    seed = check_seed(seed)
    if isinstance(attack_seeds, bool) or not isinstance(attack_seeds, int) or attack_seeds < 1:
        raise ArchsimError(f"attack_seeds must be a whole number of 1 or more, got {attack_seeds!r}")
    if precision != "auto":
        check_precision(precision)
    store = check_cache(cache)
    chosen = {k: v for k, v in {"steps": steps, "rel_step": rel_step, "random_start": random_start}.items() if v is not None}
    the_attack = create_attack(attack, eps=default_eps(data) if eps is None else eps, **chosen)
    settings = {
        "models": specs,
        "data": data,
        "n_images": n_images,
        "attack": the_attack.config(),
        "seed": seed,
        "eps_s": eps_s,
        "n_boot": n_boot,
    }
    out_dir = Path(out) if out is not None else None
    with engine_for(engine, device, address) as runner:
        if precision == "auto":
            precision = default_precision(runner.device)
        if check_precision(precision) != "fp32":  # absent for fp32, so run folders made before the option still resume
            settings["precision"] = precision
        if keep_going:  # absent unless set, as above; a rerun leaves out the same models
            settings["keep_going"] = True
        if attack_seeds > 1:
            settings["attack_seeds"] = attack_seeds
        with claimed_run_dir(out_dir, settings):  # held until the last file is written
            # Folder and npz data go into the cache and are read from there in batches: sets larger than memory run.
            images = load_data(data, split="eval", n_images=n_images, seed=seed, store=store)
            started = time.perf_counter()
            transfer = run_transfer(
                specs, images, the_attack, store, seed=seed, batch_size=batch_size, engine=runner, describe=describe,
                precision=precision, compile=compile, keep_going=keep_going, max_resident=max_resident, check_models=check_models,
            )
            reseeded = [
                run_transfer(
                    transfer.specs, images, the_attack, store, seed=seed + k, batch_size=batch_size, engine=runner, describe=None,
                    precision=precision, compile=compile, max_resident=max_resident, check_models=False,
                ) for k in range(1, attack_seeds)
            ]
            for spec, problem in transfer.left_out.items():
                warnings.warn(f"left out {spec}: {problem}", stacklevel=2)
            tables = sat_tables(transfer.names, transfer.clean_correct, transfer.adv_wrong, eps_s=eps_s, n_boot=n_boot, seed=seed)
            noise = seed_noise(tables, [sat_tables(r.names, r.clean_correct, r.adv_wrong, eps_s=eps_s, n_boot=0).sat for r in reseeded])
            config = {
                "settings": settings,
                "data_fingerprint": images.fingerprint,
                "n_images_used": len(images),
                "engine": runner.name,
                "device": runner.device,
                "batch_size": batch_size,
                "precision": precision,
                "compile": compile,
                "cache": str(store.root),
                "seconds": round(time.perf_counter() - started, 2),
                "cost": transfer.cost,
                "left_out": transfer.left_out,
                "max_resident": max_resident,
                "versions": versions(),
            }
            if noise is not None:
                config["attack_seed_noise"] = noise
            run = SatRun(
                tables.sat, tables.one_sided, tables.pairs, transfer.models_table(), config, transfer, store.hits, store.misses,
                cards_table({name: card for name, card in zip(transfer.names, transfer.cards) if card}), set(store.used),
            )
            if out_dir is not None:
                write_run(out_dir, run)
    return run


def seed_noise(tables, others: list[pd.DataFrame]) -> dict[str, Any] | None:
    """With matrices of the same run at other attack seeds: per-pair spread in ``tables.pairs`` (added in place) and the
    rank correlation between the seeds' off-diagonal entries (mean, min, max over pairs of seeds); None without others."""
    from archsim.analysis.agreement import matrix_correlations

    if not others:
        return None
    stack = np.stack([tables.sat.to_numpy(), *(m.to_numpy() for m in others)])  # [seeds, N, N]
    names = list(tables.sat.index)
    index = [names.index(s) * len(names) + names.index(t) for s, t in zip(tables.pairs.source, tables.pairs.target)]
    flat = stack.reshape(len(stack), -1)[:, index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pairs without a SAT stay NaN
        for label, values in (("mean", np.nanmean(flat, 0)), ("sd", np.nanstd(flat, 0, ddof=1)),
                              ("min", np.nanmin(flat, 0)), ("max", np.nanmax(flat, 0))):
            tables.pairs[f"sat_seed_{label}"] = values
    if len(names) >= 3:
        rhos = matrix_correlations({f"seed {k}": m for k, m in enumerate([tables.sat, *others])})["spearman"].to_numpy()
    else:  # two models make one pair: nothing to rank
        rhos = np.full(len(stack) * (len(stack) - 1) // 2, np.nan)
    return {"seeds": len(stack), "spearman_mean": float(np.nanmean(rhos)), "spearman_min": float(np.nanmin(rhos)),
            "spearman_max": float(np.nanmax(rhos)), "pairs_of_seeds": len(rhos)}


@dataclass
class AttackComparison:
    """Result of :func:`compare_attacks`."""

    matrices: dict[str, pd.DataFrame]
    correlations: pd.DataFrame
    white_box: pd.DataFrame
    noise_floor: dict[str, Any] | None = None
    """The run's ``attack_seed_noise`` (``archsim run --attack-seeds K``): how well one attack agrees with itself at
    another seed, the floor below which two attacks' correlation says nothing; None if the run did not measure it."""


def compare_attacks(
    run_dir: str | Path,
    attacks: list[str],
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> AttackComparison:
    """The SAT matrix of a finished run's models and images under each attack, and how they agree.

    The run's own attack is the reference and comes first; every attack runs at the
    run's eps, seed and images, and cached sets are reused. Writes ``sat_<attack>.csv``, ``attack_correlations.csv``
    (Pearson and Spearman of the off-diagonal entries, every pair of attacks),
    ``attack_white_box.csv`` and ``attack_comparison.png`` into ``out`` (default
    ``RUN/attacks``). ``engine`` and ``address`` as in :func:`run_sat`.
    """
    from archsim.analysis.agreement import matrix_correlations
    from archsim.report.figures import matrix_scatter, write_png

    run_dir = Path(run_dir)
    settings = _run_settings(run_dir)
    eps = settings["attack"]["eps"]
    # The run's own attack comes first (its sets are cached); listed attacks equal to it are dropped.
    own = settings["attack"]
    own_spec = _attack_spec(own)
    attacks = [own_spec] + [spec for spec in dict.fromkeys(attacks) if create_attack(spec, eps=eps).config() != own]
    if len(attacks) < 2:
        raise ArchsimError(f"give --attacks other than the run's own ({own_spec}) to compare with it")
    store = check_cache(cache, settings.get("cache"))
    matrices, white_box = {}, {}
    with engine_for(engine, device, address) as runner:
        for spec in attacks:
            result = run_sat(
                settings["models"], data=settings["data"], n_images=settings["n_images"], attack=spec, eps=eps,
                seed=settings["seed"], eps_s=settings["eps_s"], n_boot=0, device=device, batch_size=batch_size, cache=store, engine=runner,
                precision=run_precision(settings),
            )
            matrices[spec] = result.sat
            white_box[spec] = result.models.set_index("model")["white_box_success"]
    noise = json.loads((run_dir / "config.json").read_text()).get("attack_seed_noise")
    comparison = AttackComparison(matrices, matrix_correlations(matrices), pd.DataFrame(white_box).rename_axis("model"), noise)
    out = Path(out) if out is not None else run_dir / "attacks"
    out.mkdir(parents=True, exist_ok=True)
    for spec, matrix in matrices.items():
        atomic_write_text(out / f"sat_{_file_label(spec)}.csv", matrix.to_csv(float_format="%.9f"))
    atomic_write_text(out / "attack_correlations.csv", comparison.correlations.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(out / "attack_white_box.csv", comparison.white_box.to_csv(float_format="%.2f"))
    write_png(matrix_scatter(matrices, comparison.correlations), out / "attack_comparison.png")
    return comparison


def compute_measures(
    run_dir: str | Path,
    measures: list[str],
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    pair: tuple[str, str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Other similarity measures (SPEC §3) of a finished run's models on its images.

    Writes ``measure_<name>.csv`` in the ``sat.csv`` layout,
    ``measure_correlations.csv`` (each measure against the run's SAT, off-diagonal
    Pearson and Spearman) and, with 3 models or more, ``measure_comparison.csv``
    (SPEC §3: passes per item, spread over 200 resamples for ``pair`` at the compute
    of SAT on the run's images, rank correlation with SAT, correlation with the
    2-ensemble error reduction rate) with ``measure_comparison.png``, into ``out``
    (default ``RUN/measures``).
    """
    from archsim.report.figures import matrix_scatter, write_png

    from archsim.analysis.agreement import matrix_correlations
    from archsim.measures import MEASURES

    unknown = [m for m in measures if m not in MEASURES]
    if unknown or not measures:
        raise ArchsimError(f"unknown measure {unknown[0]!r}; choose from {', '.join(MEASURES)}" if unknown else "give --measures")
    settings = _run_settings(run_dir)
    store = check_cache(cache, settings.get("cache"))
    run = load_run(run_dir, store, device, batch_size)
    transfer, names = run.transfer, run.transfer.names
    missing = [p for p in pair or () if p not in names]
    if missing:  # before any measure is computed
        raise ArchsimError(f"--pair names {missing[0]!r}, not a model of this run ({', '.join(names)})")
    if pair is not None and pair[0] == pair[1]:
        raise ArchsimError(f"--pair names {pair[0]!r} twice; the spread is of a measure between two different models")
    # As in the run: folder and npz data are read from the cache a batch at a time, never held whole.
    images = load_data(settings["data"], split="eval", n_images=settings["n_images"], seed=settings["seed"], store=store)
    loaded: dict[str, Any] = {}

    def model_of(spec: str):
        if spec not in loaded:
            loaded[spec] = create_model(spec, cache=store, device=resolve_device(device))
        return loaded[spec]

    per_item = measure_items(
        list(dict.fromkeys(measures)), transfer, images, model_of, store, settings["attack"]["eps"], settings["seed"], batch_size
    )
    matrices: dict[str, pd.DataFrame] = {}
    for measure, items in per_item.items():
        matrices[measure] = pd.DataFrame(measure_matrix(measure, items), index=names, columns=names)
    out = Path(out) if out is not None else Path(run_dir) / "measures"
    out.mkdir(parents=True, exist_ok=True)
    for measure, matrix in matrices.items():
        atomic_write_text(out / f"measure_{measure}.csv", matrix.to_csv(float_format="%.9f"))
    if len(names) >= 3:
        every_pair = matrix_correlations({"sat": run.sat, **matrices})  # the scatter shows them all; the CSV those with SAT
        correlations = every_pair[every_pair.a == "sat"].reset_index(drop=True)
        atomic_write_text(out / "measure_correlations.csv", correlations.to_csv(index=False, float_format="%.6g"))
        comparison = _comparison(run, per_item, {m: matrix.to_numpy() for m, matrix in matrices.items()}, settings, pair)
        atomic_write_text(out / "measure_comparison.csv", comparison.to_csv(index=False, float_format="%.6g"))
        scatter = matrix_scatter({"sat": run.sat, **matrices}, every_pair, same_scale=False, axis_label="{}")
        write_png(scatter, out / "measure_comparison.png")
        matrices["correlations"] = correlations
        matrices["comparison"] = comparison
    return matrices


def _comparison(
    run: SatRun, per_item: dict[str, Any], matrices: dict[str, np.ndarray], settings: dict[str, Any], pair: tuple[str, str] | None
) -> pd.DataFrame:
    """SPEC §3 table for the measures of one run (their per-item values and matrices): spread at the compute of SAT on the run's images."""
    from archsim.measures import boundary, error_consistency, linear_cka, regions, sat_value
    from archsim.measures.comparison import compare_measures, ensemble_err

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
    eps_s = settings["eps_s"]
    resample = {"sat": lambda idx: float(sat_value(fooled[idx].sum(), both[idx].sum(), eps_s))}
    attack = settings["attack"]
    attack_passes = 2 * attack.get("steps", 1) * (1 + attack.get("samples", 0))
    costs = {"sat": 2 * attack_passes + 4}
    pools = {"sat": len(both)}
    for measure, items in per_item.items():
        if measure == "cka":
            # A draw's counts weight the rows: the drawn features (budget/2 rows, often many times the set) are never built.
            resample[measure] = lambda idx, f=items: linear_cka(f[a], f[b], weights=np.bincount(idx, minlength=len(f[a])))
            costs[measure], pools[measure] = 2, len(items[a])
        elif measure == "error-consistency":
            resample[measure] = lambda idx, c=items: float(error_consistency(c[[a, b]][:, idx])[0, 1])
            costs[measure], pools[measure] = 2, items.shape[-1]
        else:
            resample[measure] = lambda idx, v=items[a, b]: float(np.nanmean(v[idx])) if np.isfinite(v[idx]).any() else np.nan
            pools[measure] = items.shape[-1]
            costs[measure] = {"disagreement": 2, "regions": 2 * regions.DEFAULT_RESOLUTION**2, "boundary": 4 + 4 * boundary.DEFAULT_POINTS}[measure]
    table = compare_measures(
        {"sat": run.sat.to_numpy(), **matrices}, resample, pools, costs, ensemble_err(transfer.clean_logits, transfer.labels),
        budget=costs["sat"] * pools["sat"], seed=settings["seed"],
    )
    table.insert(1, "pair", f"{names[a]} ~ {names[b]}")
    return table


def measure_matrix(measure: str, items: Any) -> np.ndarray:
    """The N x N matrix of a measure from its per-item values."""
    from archsim.measures import cka_matrix, error_consistency

    if measure == "cka":
        return cka_matrix(items)
    if measure == "error-consistency":
        return error_consistency(items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs stay NaN
        return np.nanmean(items, axis=-1)


def measure_items(measures, transfer, images, model_of, store, eps, seed, batch_size) -> dict[str, Any]:
    """Per-item values of each measure, the raw material of its matrix and of its spread.

    [N, N, items] arrays (images, or planes for ``regions``) whose mean over items is
    the matrix; for ``cka`` the per-model feature matrices instead, memory-mapped from the cache.
    """
    from archsim.measures import boundary, regions
    from archsim.models.features import feature_batches

    def sized(spec: str, purpose: Purpose = "evaluate") -> int:
        return batch_size_for(model_of(spec), batch_size, purpose, tuple(images.images.shape[1:]), len(images), store)

    specs, fingerprints = transfer.specs, transfer.fingerprints
    labels = torch.as_tensor(transfer.labels)
    correct = transfer.clean_correct
    both = correct[:, None, :] & correct[None, :, :]
    out: dict[str, Any] = {}
    for measure in measures:
        if measure == "disagreement":
            pred = transfer.clean_pred
            out[measure] = pred[:, None, :] != pred[None, :, :]  # bool: 69 models x 50,000 images would be 1.9 GB as floats
        elif measure == "error-consistency":
            out[measure] = correct  # kappa is not a mean over images; see measure_matrix
        elif measure == "cka":
            # Memory maps of the cached features: cka_matrix reads them a chunk of rows at a time.
            out[measure] = [
                store.get_or_stream(
                    "feat", digest("features", fp, images.fingerprint), "features", (len(images), -1), np.float32,
                    lambda spec=spec: feature_batches(model_of(spec), images.images, sized(spec)),
                ).mapped("features")
                for spec, fp in zip(specs, fingerprints)
            ]
        elif measure == "regions":
            triplets = regions.plane_triplets(images.labels.numpy(), regions.DEFAULT_TRIPLETS, seed)
            setting = (regions.DEFAULT_TRIPLETS, regions.DEFAULT_RESOLUTION, regions.MARGIN, seed)
            planes = [
                store.get_or_compute(
                    "regions", digest("regions", fp, images.fingerprint, setting),
                    lambda spec=spec: {"labels": regions.region_labels(model_of(spec), images.images, triplets, batch_size=sized(spec))},
                )["labels"]
                for spec, fp in zip(specs, fingerprints)
            ]
            out[measure] = regions.region_agreement(planes)
        else:  # boundary
            reach, points = 4 * eps, boundary.DEFAULT_POINTS
            distances = np.empty((len(specs), len(specs), len(images)))
            for s, (source, fp_s) in enumerate(zip(specs, fingerprints)):
                keys = [digest("boundary", fp_s, fp_t, images.fingerprint, reach, points) for fp_t in fingerprints]
                computed: dict[int, np.ndarray] = {}

                def compute(t: int, source: str = source, keys: list[str] = keys, computed: dict = computed) -> dict:
                    if t not in computed:  # one streamed pass along the source's directions serves every target still missing
                        todo = [u for u in range(len(specs)) if u == t or not store.contains("boundary", keys[u])]
                        found = boundary.boundary_distances(
                            model_of(source), [model_of(specs[u]) for u in todo], images.images, labels, reach, points,
                            sized(source, "attack"), [sized(specs[u]) for u in todo],
                        )
                        computed.update(zip(todo, found))
                    return {"distance": computed.pop(t)}

                for t in range(len(specs)):
                    distances[s, t] = store.get_or_compute("boundary", keys[t], lambda t=t: compute(t))["distance"]
            out[measure] = boundary.boundary_gap(distances, both)
    return out


def load_run(
    run_dir: str | Path, cache: CacheStore | str | Path | None = None, device: str = "auto", batch_size: int | str = "auto",
    models: list[str] | None = None, engine: str | Engine = "local", address: str | None = None,
) -> SatRun:
    """A finished run rebuilt from the cache (nothing recomputed), optionally with more ``models``
    (attacked and evaluated by ``engine``, as in :func:`run_sat`).

    Raises a one-line error, computing nothing, when the run's adversarial sets and
    predictions are no longer in the cache: analyses on a run must not silently
    redo hours of attacks.
    """
    settings = _run_settings(run_dir)
    store = check_cache(cache, settings.get("cache"))
    require_cached(run_dir, store)
    return run_sat(
        settings["models"] + list(models or []), data=settings["data"], n_images=settings["n_images"],
        attack=_attack_spec(settings["attack"]), eps=settings["attack"]["eps"], seed=settings["seed"], eps_s=settings["eps_s"],
        n_boot=0 if models is None else settings["n_boot"], device=device, batch_size=batch_size, cache=store,
        engine=engine, address=address, precision=run_precision(settings), keep_going=settings.get("keep_going", False),
        check_models=bool(models),  # the run's own models were checked when it ran
    )


def run_precision(settings: dict[str, Any]) -> str:
    """The precision a run was computed in: work added to it must use the same."""
    return settings.get("precision", "fp32")


def require_cached(run_dir: str | Path, store: CacheStore) -> None:
    """One-line error unless every adversarial set and prediction the run used is in ``store``."""
    listed = Path(run_dir) / "cache_entries.txt"
    if not listed.is_file():
        return  # older run folders list nothing to check; the run then recomputes what is missing
    needed = [line.split("/", 1) for line in listed.read_text().split() if line.split("/", 1)[0] in ("adv", "pred")]
    missing = [entry for entry in needed if not store.contains(*entry)]
    if missing or not needed:
        raise ArchsimError(
            f"{len(missing)} of the {len(needed)} cached adversarial sets and predictions of {run_dir} are not in {store.root}; "
            "pass --cache where they are, or rerun `archsim run` with the run's settings to recompute them"
        )


def _run_settings(run_dir: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / "config.json").read_text())["settings"]
    except (OSError, ValueError, KeyError):
        raise ArchsimError(f"{run_dir} is not a finished run folder (no readable config.json); pass the --out of an archsim run") from None


def _attack_spec(config: dict[str, Any]) -> str:
    """``NAME,key=value...`` that recreates an attack from its config (eps aside)."""
    return config["name"] + "".join(f",{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in config.items() if k not in ("name", "eps"))


def _file_label(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in spec)


def describe(model) -> dict[str, str] | None:
    """The model's card, or None (with a warning) where its forward pass cannot be read."""
    try:
        return extract_card(model)
    except Exception as error:  # noqa: BLE001 - any user network may defeat the tracer; the run must go on
        warnings.warn(f"no card for {model.name}: {type(error).__name__}: {error}; give analyze --cards for it", stacklevel=2)
        return None


def versions() -> dict[str, str]:
    return {
        "archsim": archsim.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }


@contextmanager
def claimed_run_dir(out: Path | None, settings: dict[str, Any]) -> Iterator[None]:
    """Hold the run folder ``out`` (if any) for one run, from :func:`guard_run_dir` to its last file.

    A lock in the folder, which the system releases when the process ends however it
    ends, keeps a second run from writing into it meanwhile: with it held, a folder
    with a ``settings.json`` but no results belongs to no live run and may be claimed anew.
    """
    if out is None:
        yield
        return
    if out.exists() and not out.is_dir():
        raise ArchsimError(f"--out {out} is a file; choose a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArchsimError(f"cannot make --out {out} ({error.strerror}); choose a folder you can write to") from None
    lock = FileLock(str(out / RUN_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ArchsimError(f"--out {out} is in use by another archsim run; wait for it to end or choose another --out") from None
    try:
        guard_run_dir(out, settings)
        yield
    finally:
        lock.release()


def guard_run_dir(out: Path, settings: dict[str, Any]) -> None:
    """Refuse a run folder that holds results of different settings; claim a free one.

    ``settings.json`` is written before anything is computed, so a run killed at any
    point (even between its output files) can be rerun into the same folder;
    ``config.json``, written last, marks a complete run. A folder whose run wrote
    nothing but its ``settings.json`` (it failed on its input, or was stopped while
    computing: what it computed is in the cache) holds no results and is claimed anew;
    call it under :func:`claimed_run_dir`, which keeps a live run's folder from being claimed.
    """
    wanted = json.loads(json.dumps(settings))
    results = [f.name for f in out.iterdir() if f.name in RUN_FILES] if out.is_dir() else []
    for marker in ("config.json", "settings.json"):
        path = out / marker
        if not path.exists() or not results:
            continue
        try:
            existing = json.loads(path.read_text())["settings"]
        except (ValueError, KeyError, TypeError):
            raise ArchsimError(f"--out {out} holds an unreadable {marker}; choose another --out") from None
        if existing != wanted:
            differing = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
            raise ArchsimError(
                f"--out {out} holds results of a different configuration (differs in: {', '.join(differing)}); choose another --out or remove it"
            )
        return
    if results:
        raise ArchsimError(f"--out {out} holds {results[0]} of an unknown run (no settings.json); choose another --out or remove it")
    atomic_write_text(out / "settings.json", json.dumps({"settings": wanted}, indent=2, sort_keys=True) + "\n")


def write_run(out: Path, run: SatRun) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sat.csv", run.sat.to_csv(float_format="%.9f"))
    atomic_write_text(out / "pairs.csv", run.pairs.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out / "models.csv", run.models.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out / "cards.csv", run.cards.to_csv())
    if run.timings is not None:
        atomic_write_text(out / "timings.csv", run.timings.to_csv(index=False, float_format="%.4g"))
    atomic_write_text(out / "cache_entries.txt", "".join(f"{kind}/{key}\n" for kind, key in sorted(run.cache_used)))
    # config.json last: its presence marks a complete run folder.
    atomic_write_text(out / "config.json", json.dumps(run.config, indent=2, sort_keys=True) + "\n")
