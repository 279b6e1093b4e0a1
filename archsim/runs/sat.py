"""One SAT run: every model attacked once, evaluated on every set, and the tables of SPEC-style results."""

from __future__ import annotations

import math
import platform
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import sklearn
import timm
import torch
import torchvision

from archsim.analysis.agreement import matrix_correlations
from archsim.analysis.cards import cards_table
from archsim.analysis.extract import extract_card
from archsim.attacks import Attack, create_attack, hold_attack
from archsim.cache import CacheStore, check_cache
from archsim.data import load_data, memory_spec
from archsim.engines import Engine, engine_for
from archsim.errors import ArchsimError, ParameterError
from archsim.measures import DEFAULT_EPS_S, SatTables, sat_tables
from archsim.models import ModelObject, check_model_specs, check_precision, default_precision, model_specs, zoo_specs
from archsim.models.objects import keep_modules
from archsim.params import check
from archsim.report.summary import run_summary_html
from archsim.runs.folder import RunFolder, rounded
from archsim.runs.settings import RunSettings
from archsim.specs import LEVELS, check_seed, whole_levels
from archsim.transfer import TransferResult, run_transfer
from archsim.transfer.batching import check_batch_size, check_max_resident
from archsim.version import __version__

DIGITS_EPS = 25 / 255
"""Default radius on ``digits``: 25/255 levels (0.098). Chosen so that PGD fools every zoo model
white-box while transfer between families stays well below 100 %, keeping SAT informative."""

IMAGENET_EPS = 4 / 255
"""Default radius on natural-image data (imagefolder, imagenet-val, npz): 4/255, the customary radius of transfer
studies. The SAT paper fixes a radius in the sentence that sets its PGD ("the iteration to 50, the learning rate to
0.1, and ... to ..."), but the copy of its text we work from lost the symbol and the value, and the authors' release
states no attack settings. 4/255 is archsim's choice, not the paper's; ``archsim calibrate`` finds the radius at which
a run on your data agrees best with a published matrix."""


def default_eps(data: str) -> float:
    return DIGITS_EPS if data.split(":")[0].split(",")[0] == "digits" else IMAGENET_EPS


@dataclass(kw_only=True)
class SatRun:
    """Result of :func:`run_sat`."""

    sat: pd.DataFrame
    one_sided: pd.DataFrame
    pairs: pd.DataFrame
    models: pd.DataFrame
    config: dict[str, Any]
    transfer: TransferResult
    cache_hits: int
    """Entries this run read from the cache (not those of earlier work on the same store)."""
    cache_misses: int
    """Entries this run computed and wrote."""
    cards: pd.DataFrame
    cache_used: set[tuple[str, str]]
    """(kind, key) of the entries this run read or wrote: its footprint, which ``cache prune --run`` keeps."""

    @property
    def timings(self) -> pd.DataFrame:
        """Per model: seconds to load, predict clean, attack and evaluate, and their rates (0 where cached)."""
        return self.transfer.timings

    def to_frame(self) -> pd.DataFrame:
        """One row per ordered pair of models: SAT, its 95 % interval, the one-sided SAT, the fooling rates both ways
        and the images both models classify correctly (a copy of :attr:`pairs`)."""
        return self.pairs.copy()

    def save(self, path: str | Path) -> Path:
        """Write the run into folder ``path`` as ``archsim run --out`` does; :func:`load_run` reads it back.

        Modules given as objects are saved into the cache with it, where they can be pickled, so that commands on
        the run in another process (``archsim add``, ``measures``) can rebuild them. A folder holding another
        run's results is refused, as by :func:`run_sat`.
        """
        folder = RunFolder(path)
        with folder.claim(RunSettings.from_dict(self.config["settings"])):
            self.cache_used |= keep_modules(self.transfer.specs, check_cache(self.config["cache"]))
            folder.write(self)
        return folder.path

    def _repr_html_(self) -> str:
        """A compact summary for notebooks: settings, the SAT heatmap, the most and least similar pairs."""
        return run_summary_html(self)


def run_sat(  # noqa: PLR0913 - one keyword per run setting, the flags of `archsim run`
    models: Sequence[str | ModelObject] | Mapping[str, str | ModelObject] | None = None,
    data: str | tuple | Any = "digits",
    *,
    n_images: int | None = None,
    attack: str | Attack = "pgd",
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
    views: str = "own",
) -> SatRun:
    """Compute the SAT matrix of a set of models on a data set.

    Parameters
    ----------
    models : list or mapping, optional
        Model specs (see :func:`archsim.models.create_model`) and ``nn.Module`` objects,
        alone or as ``(module, preprocessing)``, in a list or a ``{name: model}``
        mapping (see :func:`archsim.models.model_specs`); default: the embedded zoo.
        A module is copied and fingerprinted (:mod:`archsim.models.objects` says what
        the fingerprint covers); its results are cached like a spec's.
    data : str, tuple or Dataset
        Data spec (see :func:`archsim.data.load_data`), or images in Python:
        ``(images, labels[, classes])`` tensors or arrays, or a torch ``Dataset``
        (see :func:`archsim.data.memory_spec`), kept in the cache by their content.
    n_images : int, optional
        Seeded, class-stratified subset size.
    attack : str or Attack
        ``NAME[,key=value...]``, e.g. ``pgd`` (docs/method.md#sat), ``apgd-ce,steps=100``,
        ``torchattacks:DIFGSM`` (see :func:`archsim.attacks.create_attack`); or an
        :class:`archsim.attacks.Attack` instance, whose ``config()`` must name every
        setting that changes its result (it is the attack's part of the cache keys).
    eps, steps, rel_step, random_start
        Attack options; ``None`` keeps the attack's default (``eps``: :func:`default_eps`
        of the data). An option the attack does not take is an error, as is any option
        with an Attack instance (set them on the instance).
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
    views : {"own", "shared"}
        ``own`` (the SAT paper's protocol): each model sees every image through its own
        evaluation transform (timm's resize, crop and interpolation, decoded from the
        file), is attacked at its own resolution, and a target resizes a source's
        adversarial images to its input size. ``shared``: one stored pixel space (the
        data spec's ``size`` and ``crop_pct``) that every model resizes in its forward.
        :mod:`archsim.data.views` and the method page say what each costs.
    """
    specs = model_specs(models) if models else zoo_specs()
    check_run_options(specs, eps_s=eps_s, n_boot=n_boot, views=views, attack_seeds=attack_seeds, precision=precision)
    batch_size = check_batch_size(batch_size)
    max_resident = check_max_resident(max_resident)
    seed = check_seed(seed)
    store = check_cache(cache)
    tally = store.tally()  # this run's hits, misses and entries, on a store that may have served other work
    chosen = {
        k: v for k, v in {"steps": steps, "rel_step": rel_step, "random_start": random_start}.items() if v is not None
    }
    check_attack_options(attack, eps=eps, chosen=chosen)
    if not isinstance(data, str):
        data = memory_spec(data, store)
    the_attack = run_attack(attack, data=data, eps=eps, chosen=chosen)
    out_dir = Path(out) if out is not None else None
    with engine_for(engine, device, address) as runner:
        settings = RunSettings(
            models=tuple(specs),
            data=data,
            n_images=n_images,
            attack=the_attack.config(),
            seed=seed,
            eps_s=eps_s,
            n_boot=n_boot,
            precision=check_precision(default_precision(runner.device) if precision == "auto" else precision),
            keep_going=bool(keep_going),
            attack_seeds=attack_seeds,
            views=views,
        )
        precision = settings.precision
        # held until the last file is written
        with RunFolder(out_dir).claim(settings) if out_dir is not None else nullcontext():
            # Folder and npz data go into the cache and are read from there in batches: sets larger than memory run.
            images = load_data(data, split="eval", n_images=n_images, seed=seed, store=store, views=views)
            started = time.perf_counter()
            options = dict(
                batch_size=batch_size,
                engine=runner,
                precision=precision,
                compile=compile,
                max_resident=max_resident,
            )
            transfer, *reseeded = transfers_at_seeds(
                specs,
                images,
                the_attack,
                store,
                seed=seed,
                attack_seeds=attack_seeds,
                keep_going=keep_going,
                check_models=check_models,
                options=options,
            )
            for spec, problem in transfer.left_out.items():
                warnings.warn(f"left out {spec}: {problem}", stacklevel=2)
            tables, noise = tables_at_seeds(transfer, reseeded, eps_s=eps_s, n_boot=n_boot, seed=seed)
            config = run_config(
                settings, images, transfer, store=store, options=options, seconds=time.perf_counter() - started
            )
            if noise is not None:
                config["attack_seed_noise"] = noise
            # Before the run's footprint is taken: the saved modules are part of it (cache_entries.txt).
            kept = keep_modules(transfer.specs, store) if out_dir is not None else set()
            hits, misses, used = tally.counts()
            run = SatRun(
                sat=rounded(tables.sat, "sat"),
                one_sided=tables.one_sided,
                pairs=rounded(tables.pairs, "pairs"),
                models=rounded(transfer.models_table(), "models"),
                config=config,
                transfer=transfer,
                cache_hits=hits,
                cache_misses=misses,
                cards=cards_table(
                    {name: card for name, card in zip(transfer.names, transfer.cards, strict=True) if card}
                ),
                cache_used=used | kept,
            )
            if out_dir is not None:
                RunFolder(out_dir).write(run)
    return run


def transfers_at_seeds(
    specs: list[str],
    images,
    attack: Attack,
    store: CacheStore,
    *,
    seed: int,
    attack_seeds: int,
    keep_going: bool,
    check_models: bool,
    options: dict[str, Any],
) -> list[TransferResult]:
    """The run's transfer at ``seed`` (models checked, cards read), then at each further attack seed on the models it
    kept."""
    first = run_transfer(
        specs,
        images,
        attack,
        store,
        seed=seed,
        describe=describe,
        keep_going=keep_going,
        check_models=check_models,
        **options,
    )
    return [first] + [
        run_transfer(first.specs, images, attack, store, seed=seed + k, describe=None, check_models=False, **options)
        for k in range(1, attack_seeds)
    ]


def check_run_options(
    specs: list[str], *, eps_s: float, n_boot: int, views: str, attack_seeds: int, precision: str
) -> None:
    """The checks of :func:`run_sat` that need nothing loaded, in the order a user meets them."""
    if len(specs) < 2:
        raise ParameterError("models", "SAT needs at least two models; pass more {}")
    if len(set(specs)) != len(specs):
        raise ArchsimError("a model spec is given twice; list each model once")
    check_model_specs(specs)  # before the out folder is claimed and the data read (hashing a folder takes minutes)
    for parameter, value in (
        ("eps_s", eps_s),
        ("n_boot", n_boot),
        ("views", views),
        ("attack_seeds", attack_seeds),
        ("precision", precision),
    ):
        check(parameter, value)


def check_attack_options(attack: str | Attack, *, eps: float | None, chosen: dict[str, Any]) -> None:
    """An Attack instance carries its own settings (none may be given beside it) and is checked to pickle; anything
    else must be a spec string."""
    if isinstance(attack, Attack):
        given = next((k for k, v in {"eps": eps, **chosen}.items() if v is not None), None)
        if given is not None:
            raise ParameterError(given, "is the Attack instance's own setting; set it when you make the attack")
        hold_attack(attack)
    elif not isinstance(attack, str):
        raise ParameterError("attack", f"got a {type(attack).__name__}; give a spec string or an Attack instance")


def run_attack(attack: str | Attack, *, data: str, eps: float | None, chosen: dict[str, Any]) -> Attack:
    """The attack a run uses: an instance as given (warned when its eps is not whole levels of 1/255), or a spec made
    at ``eps`` (the data's default radius when None) rounded to whole levels."""
    if isinstance(attack, Attack):
        if whole_levels(attack.eps)[1] is not None:
            levels = math.floor(attack.eps * LEVELS + 1e-6)
            warnings.warn(
                f"{attack.name}'s eps {attack.eps} is {attack.eps * LEVELS:.2f} levels of 1/255 and adversarial images "
                f"are whole levels: they keep the {levels} inside it (give eps as N/255 to choose)",
                stacklevel=3,
            )
        return attack
    radius, note = whole_levels(default_eps(data) if eps is None else eps)
    if note is not None:
        warnings.warn(note, stacklevel=3)
    return create_attack(attack, eps=radius, **chosen)


def run_config(
    settings: RunSettings,
    images,
    transfer: TransferResult,
    *,
    store: CacheStore,
    options: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """A run's config.json: its settings, what it ran on and with (``options`` as given to :func:`run_transfer`), its
    cost and the weights of every model."""
    runner = options["engine"]
    return {
        "settings": settings.to_dict(),
        "data_fingerprint": images.key,
        "n_images_used": len(images),
        "engine": runner.name,
        "device": runner.device,
        "batch_size": options["batch_size"],
        "precision": options["precision"],
        "compile": options["compile"],
        "cache": str(store.root),
        "seconds": round(seconds, 2),
        "cost": transfer.cost,
        "left_out": transfer.left_out,
        "weights": weights_record(transfer),
        "max_resident": options["max_resident"],
        "versions": versions(),
    }


def weights_record(transfer: TransferResult) -> dict[str, dict[str, str]]:
    """Per model, the weights it ran with: tag, hub id, SHA-256 and the view it saw (the run's config.json)."""
    return {
        name: {k: info.get(k, "") for k in ("weights_tag", "hub_id", "weights_sha256", "view")}
        for name, info in zip(transfer.names, transfer.info, strict=True)
    }


def tables_at_seeds(
    transfer: TransferResult, reseeded: list[TransferResult], *, eps_s: float, n_boot: int, seed: int
) -> tuple[SatTables, dict[str, Any] | None]:
    """The run's tables at its seed, with the spread over the other attack seeds (:func:`seed_noise`)."""
    tables = sat_tables(
        transfer.names, transfer.clean_correct, transfer.adv_wrong, eps_s=eps_s, n_boot=n_boot, seed=seed
    )
    others = [sat_tables(r.names, r.clean_correct, r.adv_wrong, eps_s=eps_s, n_boot=0).sat for r in reseeded]
    return tables, seed_noise(tables, others)


def seed_noise(tables, others: list[pd.DataFrame]) -> dict[str, Any] | None:
    """With matrices of the same run at other attack seeds: per-pair spread in ``tables.pairs`` (added in place) and the
    rank correlation between the seeds' off-diagonal entries (mean, min, max over pairs of seeds); None without
    others."""
    if not others:
        return None
    stack = np.stack([tables.sat.to_numpy(), *(m.to_numpy() for m in others)])  # [seeds, N, N]
    names = list(tables.sat.index)
    index = [
        names.index(s) * len(names) + names.index(t)
        for s, t in zip(tables.pairs.source, tables.pairs.target, strict=True)
    ]
    flat = stack.reshape(len(stack), -1)[:, index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pairs without a SAT stay NaN
        for label, values in (
            ("mean", np.nanmean(flat, 0)),
            ("sd", np.nanstd(flat, 0, ddof=1)),
            ("min", np.nanmin(flat, 0)),
            ("max", np.nanmax(flat, 0)),
        ):
            tables.pairs[f"sat_seed_{label}"] = values
    if len(names) >= 3:
        rhos = matrix_correlations({f"seed {k}": m for k, m in enumerate([tables.sat, *others])})["spearman"].to_numpy()
    else:  # two models make one pair: nothing to rank
        rhos = np.full(len(stack) * (len(stack) - 1) // 2, np.nan)
    return {
        "seeds": len(stack),
        "spearman_mean": float(np.nanmean(rhos)),
        "spearman_min": float(np.nanmin(rhos)),
        "spearman_max": float(np.nanmax(rhos)),
        "pairs_of_seeds": len(rhos),
    }


def load_run(
    run_dir: str | Path,
    *,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    models: list[str] | None = None,
    engine: str | Engine = "local",
    address: str | None = None,
) -> SatRun:
    """A finished run rebuilt from the cache (nothing recomputed), optionally with more ``models``
    (attacked and evaluated by ``engine``, as in :func:`run_sat`).

    Raises a one-line error, computing nothing, when the run's adversarial sets and
    predictions are no longer in the cache: analyses on a run must not silently
    redo hours of attacks.
    """
    folder = RunFolder(run_dir)
    settings, store = folder.settings, folder.cache(cache)
    folder.require_cached(store)
    run = run_like(
        folder,
        list(settings.models) + list(models or []),
        n_boot=0 if models is None else settings.n_boot,
        device=device,
        batch_size=batch_size,
        cache=store,
        engine=engine,
        address=address,
        keep_going=settings.keep_going,
        check_models=bool(models),  # the run's own models were checked when it ran
    )
    if models is None:  # the run as it was: its tables and config as written, not recomputed without intervals
        tables = folder.tables()
        run.sat, run.pairs, run.models, run.cards = tables["sat"], tables["pairs"], tables["models"], tables["cards"]
        run.config = folder.config
    return run


def run_like(folder: RunFolder, models: list[str], attack: str | Attack | None = None, **options: Any) -> SatRun:
    """:func:`run_sat` of ``models`` on a finished run's data, images, seed, ``eps_s``, precision and attack (or
    ``attack`` at the run's eps: a spec, or an instance made with that eps): work on a run computes exactly as the
    run did. ``options`` go to ``run_sat``."""
    settings = folder.settings
    eps = settings.eps
    if isinstance(attack, Attack) and attack.eps != eps:
        raise ParameterError("attack", f"{attack.name} has eps {attack.eps}; the run's is {eps}: make it with that")
    return run_sat(
        models,
        data=settings.data,
        n_images=settings.n_images,
        attack=folder.attack_spec if attack is None else attack,
        eps=None if isinstance(attack, Attack) else eps,
        seed=settings.seed,
        eps_s=settings.eps_s,
        precision=folder.precision,
        views=folder.views,
        **options,
    )


def describe(model) -> dict[str, str] | None:
    """The model's card, or None (with a warning) where its forward pass cannot be read."""
    try:
        return extract_card(model)
    except Exception as error:  # noqa: BLE001 - any user network may defeat the tracer; the run must go on
        warnings.warn(
            f"no card for {model.name}: {type(error).__name__}: {error}; give analyze --cards for it", stacklevel=2
        )
        return None


def versions() -> dict[str, str]:
    return {
        "archsim": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }
