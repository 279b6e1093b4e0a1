"""Attack every source once, evaluate every target once on every set; all cached by content.

Stage 1 (attack), one task per source: its clean logits and its adversarial set.
Stage 2 (evaluate), one task per target, loaded once: its predictions on every
source's set. An engine (:mod:`archsim.engines`) runs the tasks of a stage, here or
on a cluster, and the second stage starts only when the first has ended. Cache keys:
model fingerprint (architecture, weights, preprocessing), data fingerprint (pixels
and labels) and the attack's settings, so a second run with the same inputs
recomputes nothing, whichever engine computed the first.

Images flow in batches: a source reads the data set (in memory or in the cache)
batch by batch and writes its adversarial set and its clean logits into the cache
batch by batch; a target reads each set back the same way. No task holds a whole
image set. The run's result keeps the clean logits of all models (models x images
x classes: 14 GB for 69 models on the ImageNet validation set) memory-mapped from
the cache, and the predicted labels as 16-bit integers where they fit.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TypedDict

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from archsim.attacks import Attack
from archsim.attacks.base import copy_to_host, to_device
from archsim.cache import CacheStore, digest
from archsim.data import ImageSet, imagenet_wnids
from archsim.errors import ArchsimError, ParameterError, one_line
from archsim.labels import compact_labels, predicted_labels
from archsim.models import (
    SimModel,
    channels_last_by_default,
    check_model_specs,
    check_precision,
    convolutional,
    create_model,
    precision_context,
    prepare,
    train_zoo,
)
from archsim.params import AUTO
from archsim.progress import steps
from archsim.transfer.batching import (
    CHECK_IMAGES,
    batch_size_for,
    record_check,
    resident_budget,
    search_seconds,
    weight_bytes,
)

if TYPE_CHECKING:
    from archsim.engines import Engine


@dataclass(kw_only=True)
class TransferResult:
    """Everything SAT and later analyses need from one run.

    ``clean_logits[n]``: model n on the clean set, [M, C] (read-only, memory-mapped
    from the cache by :func:`run_transfer`); ``adv_pred[s, t]``: target t's predicted
    labels on source s's adversarial set, [M], -1 on images outside X_st (either model
    wrong on the clean image), which no output uses and so are not evaluated.
    """

    names: list[str]
    specs: list[str]
    labels: np.ndarray
    clean_logits: np.ndarray
    adv_pred: np.ndarray
    fingerprints: list[str]
    adv_keys: list[str]
    info: list[dict] = field(default_factory=list)
    cards: list[dict | None] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    """Specs the preflight check left out (``keep_going``), with why."""
    cost: TransferCost = field(default_factory=dict)
    """Seconds per stage, bytes read from the cache, images evaluated and skipped."""
    timings: pd.DataFrame | None = None
    """Per model: seconds to load, predict clean, attack and evaluate, and their rates."""

    @cached_property
    def clean_pred(self) -> np.ndarray:
        # Cached: every read of a mapped array larger than memory goes back to the disk.
        return predicted_labels(self.clean_logits)

    @property
    def clean_correct(self) -> np.ndarray:
        return self.clean_pred == self.labels[None, :]

    @property
    def adv_wrong(self) -> np.ndarray:
        """Target t misclassifies source s's adversarial image, where it was evaluated (inside X_st)."""
        return (self.adv_pred != self.labels[None, None, :]) & (self.adv_pred >= 0)

    def models_table(self) -> pd.DataFrame:
        diag = np.array(
            [
                self.adv_wrong[i, i][self.clean_correct[i]].mean() if self.clean_correct[i].any() else np.nan
                for i in range(len(self.names))
            ]
        )
        return pd.DataFrame(
            {
                "model": self.names,
                "spec": self.specs,
                "clean_accuracy": self.clean_correct.mean(1) * 100,
                "white_box_success": diag * 100,
                "fingerprint": self.fingerprints,
                "family": [i.get("family", "") for i in self.info],
                "architecture": [i.get("architecture", "") for i in self.info],
                "regime": [i.get("regime", "") for i in self.info],
                "hparams": [i.get("hparams", "") for i in self.info],
                "seed": pd.array([i.get("seed") for i in self.info], dtype="Int64"),
                **{column: [i.get(column, "") for i in self.info] for column in PROVENANCE},
            }
        )


PROVENANCE = ("view", "weights_tag", "hub_id", "weights_sha256")
"""Columns of the models table that say what each model saw and which weights it held."""


def adv_key(fingerprint: str, data: ImageSet, attack: Attack, seed: int, precision: str = "fp32") -> str:
    revision = ({"revision": attack.revision},) if attack.revision > 1 else ()  # absent at 1: earlier keys stay valid
    return digest("adv", fingerprint, data.key, attack.config(), seed, *_precision_part(precision), *revision)


def pred_key(fingerprint: str, images_key: str, precision: str = "fp32") -> str:
    return digest("pred", fingerprint, images_key, *_precision_part(precision))


def _precision_part(precision: str) -> tuple[dict, ...]:
    # fp32 adds nothing, so the keys of runs made before precision was an option stay valid.
    return () if precision == "fp32" else ({"precision": precision},)


def predict(model: SimModel, images: torch.Tensor, batch_size: int, desc: str | None = None) -> torch.Tensor:
    """Logits of ``model`` on uint8 ``images``, batched, under inference mode."""
    batches = (images[start : start + batch_size] for start in range(0, len(images), batch_size))
    return torch.cat(list(predict_stream(model, batches, desc=desc, total=-(-len(images) // batch_size))))


def predict_stream(
    model: SimModel,
    batches: Iterable[torch.Tensor],
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str | None = None,
    total: int | None = None,
) -> Iterator[torch.Tensor]:
    """Logits of ``model`` on each uint8 batch (or ``reduce`` of them, computed on the device), on the CPU.

    Each batch is handed back one batch late: its copy to the CPU is queued behind its
    forward, and the host waits for it while the device already works on the next batch.
    """
    pending = None
    for batch in tqdm(batches, desc=desc, total=total, unit="batch", leave=False, disable=None if desc else True):
        # Entered per batch, not around the loop: a mode entered in a generator would leak into its caller at each
        # yield.
        with torch.inference_mode():
            out = model(to_device(batch, model.device).float().div_(255.0)).float()
            out = reduce(out) if reduce is not None else out
        copied = copy_to_host(out)  # outside inference mode: the copy is an ordinary tensor for its users
        if pending is not None:
            yield pending()
        pending = copied
    if pending is not None:
        yield pending()


def check_compatible(model: SimModel, data: ImageSet) -> None:
    if model.num_outputs != data.num_classes:
        wnid_folders = data.name.startswith("imagefolder:") and set(data.classes) <= set(imagenet_wnids())
        fix = (
            "its class folders are ImageNet-1k WordNet ids: add ,classes=imagenet to the data spec"
            if wnid_folders and model.num_outputs == len(imagenet_wnids())
            else "use data with the model's classes or a model built for them (e.g. num_classes=)"
        )
        raise ArchsimError(
            f"model {model.name} outputs {model.num_outputs} classes but data {data.name} has {data.num_classes}; {fix}"
        )


@dataclass
class SourceOutcome:
    """What stage 1 learns of one model; ``card`` is None without a ``describe``."""

    name: str
    fingerprint: str
    info: dict
    card: dict | None
    adv_key: str
    clean_key: str
    timing: dict = field(default_factory=dict)
    adv_shape: tuple[int, ...] = ()
    """[N, C, H, W] of the adversarial set: the source's own view."""
    """Seconds to load, predict the clean set and attack it (0 where the cache had the result)."""


def cache_clean_logits(
    model: SimModel, data: ImageSet, store: CacheStore, batch_size: int | str, precision: str
) -> tuple[str, bool]:
    """Cache ``model``'s logits on the clean ``data`` as it sees it (:meth:`ImageSet.seen_by`), as a source's attack
    task does (with the model prepared as there); returns their cache key and whether they were computed rather than
    found."""
    key, misses = pred_key(model.fingerprint, data.key, precision), store.misses

    def logits() -> Iterator[np.ndarray]:
        # Searched only when something is computed: a run found in the cache measures nothing.
        seen = data.seen_by(model.preprocess.view, store)
        size = batch_size_for(
            model, batch_size, "evaluate", tuple(seen.images.shape[1:]), len(seen), store, precision, work=len(seen)
        )
        return (rows.numpy() for rows in predict_stream(model, seen.batches(size)))

    with precision_context(model.device, precision):
        store.get_or_stream("pred", key, "logits", (len(data.labels), model.num_outputs), np.float32, logits)
    return key, store.misses > misses


def attack_source(
    device: str,
    store: CacheStore,
    spec: str,
    data: ImageSet,
    attack: Attack,
    seed: int,
    batch_size: int | str,
    describe: Callable[[SimModel], dict | None] | None = None,
    precision: str = "fp32",
    compile: bool = False,
) -> SourceOutcome:
    """Stage-1 task: load one model, cache its clean logits and its adversarial set, both on the data as the model
    sees it (its own view, or the shared set: :meth:`ImageSet.seen_by`)."""
    started = time.perf_counter()
    model = CHECKED.take(spec, device)
    if model is None:
        model = create_model(spec, cache=store, device=device)
        check_compatible(model, data)
    prepare(model, precision, compile)  # a checked model is kept only as the attack prepares it: nothing changes
    timing = {"load_s": time.perf_counter() - started}
    seen = data.seen_by(model.preprocess.view, store)

    def adversarial_set() -> Iterator[np.ndarray]:
        # Searched only when something is computed: a run found in the cache measures nothing. An attack whose result
        # depends on its batches keeps its own size.
        shape = tuple(seen.images.shape[1:])
        work = len(seen) * attack.passes
        size = attack.fixed_batch or batch_size_for(
            model, batch_size, "attack", shape, len(seen), store, precision, work
        )
        return (
            adv.numpy()
            for adv in attack.stream(model, seen.batches(size), seen.labels, seed, size, f"attack {model.name}")
        )

    began, searched = time.perf_counter(), search_seconds()
    clean_key, computed = cache_clean_logits(model, data, store, batch_size, precision)
    clean_search = search_seconds() - searched
    timing["clean_s"] = time.perf_counter() - began - clean_search if computed else 0.0
    with precision_context(device, precision):
        key = adv_key(model.fingerprint, data, attack, seed, precision)
        began, misses, searched = time.perf_counter(), store.misses, search_seconds()
        # Checked, not just found: a damaged set is found and recomputed here, while the source is loaded.
        store.get_or_stream("adv", key, "images", tuple(seen.images.shape), np.uint8, adversarial_set)
        attack_search = search_seconds() - searched
        timing["attack_s"] = time.perf_counter() - began - attack_search if store.misses > misses else 0.0
    timing["search_s"] = clean_search + attack_search
    card = describe(model) if describe is not None else None
    view = model.preprocess.view
    seen_as = (
        view.label() if data.views == "own" and view else f"stored {seen.images.shape[-2]}x{seen.images.shape[-1]}"
    )
    info = {**model.info, "architecture": model.architecture_id, "view": seen_as}
    return SourceOutcome(model.name, model.fingerprint, info, card, key, clean_key, timing, tuple(seen.images.shape))


class CheckedModels:
    """Models the check built, kept in this process for the attack stage while their weights fit ``limit`` bytes.

    The attack task takes its model from here instead of building it again. Kept first come and never pushed out:
    the attack stage takes them in the order the check built them. ``limit`` is 0 (nothing kept) unless a run in
    this process sets it: an engine's other processes (Ray workers) keep nothing.
    """

    def __init__(self) -> None:
        self.limit = 0
        self._models: dict[tuple[str, str], tuple[SimModel, int]] = {}

    def offer(self, spec: str, device: str, model: SimModel) -> None:
        size = weight_bytes(model)
        if self.held_bytes + size <= self.limit:
            self._models[spec, device] = (model, size)

    def take(self, spec: str, device: str) -> SimModel | None:
        found = self._models.pop((spec, device), None)
        return found[0] if found is not None else None

    @property
    def held_bytes(self) -> int:
        return sum(size for _, size in self._models.values())

    def release(self) -> None:
        self._models.clear()
        self.limit = 0


CHECKED = CheckedModels()
"""This process's models built by the check and not yet taken by their attack task."""


@dataclass
class PreflightOutcome:
    """Whether one model runs through the preparation a run will use; ``problem`` is None where it does."""

    spec: str
    problem: str | None
    seconds: float
    usage: bool = False
    """The problem is the user's input (e.g. outputs that do not fit the data's classes), not the network failing."""
    input_size: tuple[int, ...] | None = None
    """The network's own input size [C, H, W] (None: it takes any)."""


def preflight_model(
    device: str,
    store: CacheStore,
    spec: str,
    data: ImageSet,
    precision: str = "fp32",
    compile: bool = False,
) -> PreflightOutcome:
    """Stage-0 task: build one model and run two images forward and backward (as an attack does) in the
    layout, precision and compilation the run will use, and forward under inference where evaluation
    uses another layout. Never raises for the model's own faults: they come back as ``problem``, one line.
    A failure is tried once more before it counts: a model that fails twice cannot run, while a passing
    fault (a file system that hiccups, memory another process held) should not end a study."""
    started = time.perf_counter()
    problem, usage, size = None, False, None
    for _ in range(2):
        problem, usage, size = _check_model(device, store, spec, data, precision, compile)
        if problem is None or usage:
            break
    return PreflightOutcome(spec, problem, time.perf_counter() - started, usage, size)


def _check_model(
    device: str,
    store: CacheStore,
    spec: str,
    data: ImageSet,
    precision: str,
    compile: bool,
) -> tuple[str | None, bool, tuple[int, ...] | None]:
    """(the problem in one line, or None; whether it is the user's input rather than the network; its input size)."""
    size = None
    try:
        model = create_model(spec, cache=store, device=device)
        size = model.preprocess.input_size
        check_compatible(model, data)
        images = data.seen_by(model.preprocess.view, store, limit=CHECK_IMAGES).images
        x, y = to_device(images, model.device).float().div_(255.0), data.labels[: len(images)].to(model.device)
        prepare(model, precision, compile, purpose="attack")
        finite = []

        def attack_step() -> None:
            with precision_context(device, precision):
                losses, grad, _ = Attack.input_gradient(model, x, y)
                finite.append(bool(torch.isfinite(losses).all() and torch.isfinite(grad).all()))

        # Its memory is kept: the batch-size search predicts from it what fits before trying anything.
        record_check(model, len(images), tuple(images.shape[1:]), precision, attack_step, store)
        if not finite[0]:
            raise ArchsimError("its loss or input gradient is not finite on the first images")
        # Evaluation runs the same network, checked apart (a second forward) only where it runs otherwise: in another
        # layout (prepare() picks channels-last inference on CUDA) or compiled anew for inference.
        evaluation_layout = channels_last_by_default(
            convolutional(model), model.device.type == "cuda", precision, compile, "evaluate"
        )
        if compile or evaluation_layout != model.channels_last:
            if not compile:
                prepare(model, precision, compile, purpose="evaluate")
            with precision_context(device, precision), torch.inference_mode():
                model(x).argmax(-1).cpu()
        else:  # ready for its attack task as it stands: kept for it, not built again
            CHECKED.offer(spec, device, model)
    except ArchsimError as error:
        return str(error), True, size
    except Exception as error:  # noqa: BLE001 - any network may fail in its own way; the run reports it in one line
        return one_line(error)[:300], False, size
    return None, False, size


def preflight(
    engine: Engine, specs: list[str], data: ImageSet, store: CacheStore, precision: str, compile: bool, keep_going: bool
) -> dict[str, str]:
    """Check every model before any heavy work; the models to leave out (spec -> why) under ``keep_going``.

    Without ``keep_going`` a model that cannot run is a one-line error naming it, before any attack.
    """
    outcomes: list[PreflightOutcome] = engine.map(
        preflight_model,
        [(spec, data, precision, compile) for spec in specs],
        store,
        "check models",
        specs,
        report_all=True,
    )
    side = min(data.images.shape[-2:])
    decoded_at_size = data.views == "own" and data.files is not None  # each model's view is decoded at its size
    for o in outcomes:
        if not decoded_at_size and o.input_size is not None and side * UPSAMPLING_WARNED < min(o.input_size[1:]):
            warnings.warn(
                f"{data.name}'s images are {data.images.shape[-2]}x{data.images.shape[-1]} px, far below the "
                f"{o.input_size[1]}x{o.input_size[2]} {o.spec} takes: they are upsampled "
                f"{min(o.input_size[1:]) // side}x, "
                "and attacks on such images say little about the model; give images near its input size",
                stacklevel=3,
            )
    failed = {o.spec: o.problem for o in outcomes if o.problem is not None}
    usage = next((o.problem for o in outcomes if o.problem is not None and o.usage), None)
    if usage is not None and not keep_going:
        raise ArchsimError(usage)  # already one line that names the model and the fix
    if failed and not keep_going:
        listed = "; ".join(f"{spec}: {problem}" for spec, problem in failed.items())
        raise ParameterError(
            "keep_going",
            f"{len(failed)} of {len(specs)} models cannot run ({listed}); fix or remove them, or pass {{}} to "
            f"leave them out",
        )
    return failed


UPSAMPLING_WARNED = 4
"""A model whose input side is more than this many times the data's is warned about (1x1 images ran, slowly, unsaid)."""


def needed_pred_key(fingerprint: str, images_key: str, needed: np.ndarray, precision: str = "fp32") -> str | None:
    """Cache key of a target's predictions on the ``needed`` images of a set (None: no image needed).

    All images needed is the plain :func:`pred_key`, so full predictions from any run serve.
    """
    if needed.all():
        return pred_key(fingerprint, images_key, precision)
    if not needed.any():
        return None
    return digest(
        "pred",
        fingerprint,
        images_key,
        *_precision_part(precision),
        {"only": hashlib.sha256(np.packbits(needed).tobytes()).hexdigest()},
    )


@dataclass
class EvaluationOutcome:
    """Stage 2 for a group of targets: predictions ([sources, images] per target, -1 where no output
    needs the image) and what it cost."""

    predictions: list[np.ndarray]
    adversarial_bytes_read: int
    images_evaluated: int
    images_skipped: int
    timings: list[dict]
    groups: int


def evaluate_targets(
    device: str,
    store: CacheStore,
    targets: list[tuple[str, str]],
    adv_keys: list[str],
    needed: list[np.ndarray],
    image_shape: tuple[int, ...],
    batch_size: int | str,
    precision: str = "fp32",
    compile: bool = False,
    max_resident: int | str = AUTO,
    own_views: bool = False,
) -> EvaluationOutcome:
    """Stage-2 task: the predictions of a group of targets (spec, fingerprint) on every source's set.

    ``needed[t][s]`` marks the images of set s whose prediction by target t some output
    uses (for SAT: both models right on the clean image); only they are evaluated.
    Predictions already cached are read, not recomputed, and a target is loaded only if
    one is missing. The missing ones are computed with as many targets resident as
    ``max_resident`` allows (``auto``: as many as fit in a share of the free memory, see
    :func:`archsim.transfer.batching.resident_budget`): each set is read once per
    group of resident targets, its batches streamed past all of them, instead of once
    per target. ``image_shape`` is the stored shape of the data, which sizes the batch
    search; with ``own_views`` each target's own input size does (the sets arrive at
    their sources' sizes and are resized to it).
    """
    evaluation = TargetsEvaluation(
        store=store,
        device=device,
        adv_keys=adv_keys,
        needed=needed,
        image_shape=image_shape,
        batch_size=batch_size,
        precision=precision,
        own_views=own_views,
    )
    evaluation.read_cached(targets)
    budget = resident_budget(torch.device(device), max_resident)
    group: list[tuple[int, SimModel]] = []
    held = 0
    for t, (spec, fingerprint) in enumerate(targets):
        if not evaluation.todo[t]:
            continue
        started = time.perf_counter()
        model = create_model(spec, cache=store, device=device)
        if model.fingerprint != fingerprint:
            raise ArchsimError(f"model {spec} changed during the run (different weights); rerun")
        prepare(model, precision, compile, purpose="evaluate")
        evaluation.timings[t]["load_s"] = time.perf_counter() - started
        group.append((t, model))
        held += weight_bytes(model)
        if len(group) >= budget.models or held >= budget.bytes:
            evaluation.evaluate_group(group)
            group, held = [], 0  # the group's models are freed before the next are loaded
    if group:
        evaluation.evaluate_group(group)
    return evaluation.outcome()


@dataclass(kw_only=True)
class TargetsEvaluation:
    """Stage 2's state for one task's targets: the predictions each still lacks (``todo``: source -> cache key), what
    they predicted, and what it cost."""

    store: CacheStore
    device: str
    adv_keys: list[str]
    needed: list[np.ndarray]
    image_shape: tuple[int, ...]
    batch_size: int | str
    precision: str
    own_views: bool
    predictions: list[np.ndarray] = field(default_factory=list)
    todo: list[dict[int, str]] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)
    bytes_read: int = 0
    evaluated: int = 0
    skipped: int = 0
    groups: int = 0

    def read_cached(self, targets: list[tuple[str, str]]) -> None:
        """Each target's cached predictions filled in; the sets whose predictions are missing noted in ``todo``."""
        n_images = self.needed[0].shape[1] if self.needed else 0
        for t, (_, fingerprint) in enumerate(targets):
            predictions = np.full((len(self.adv_keys), n_images), -1, dtype=np.int64)
            missing: dict[int, str] = {}
            for s, images_key in enumerate(self.adv_keys):
                mask = self.needed[t][s]
                self.skipped += int((~mask).sum())
                key = needed_pred_key(fingerprint, images_key, mask, self.precision)
                if key is None:
                    continue
                full = pred_key(fingerprint, images_key, self.precision)
                # Predictions of every image (an earlier run's, or a command that needed them all) serve any mask.
                found = self.store.find("pred", full) if key != full else None
                found = found if found is not None else self.store.find("pred", key)
                if found is None:
                    missing[s] = key
                else:
                    predictions[s][mask] = found["pred"][mask]
            self.predictions.append(predictions)
            self.todo.append(missing)
            self.timings.append({"load_s": 0.0, "evaluate_s": 0.0, "search_s": 0.0, "images": 0})

    def evaluate_group(self, group: list[tuple[int, SimModel]]) -> None:
        """Stream every set that some resident target lacks past those targets, once; store what they predict."""
        self.groups += 1
        sizes = self.batch_sizes(group)
        read_size = max(sizes.values())
        # Reported per set streamed past the group: with every target resident, the stage is one group, silent
        # otherwise.
        sources = sorted({s for t, _ in group for s in self.todo[t]})
        desc = f"evaluate {len(group)} target{'s' if len(group) > 1 else ''} on each set"
        for s in steps(sources, desc, len(sources), per_unit="sets", unit="set"):
            members = [(t, model) for t, model in group if s in self.todo[t]]
            adv_images = self.store.open("adv", self.adv_keys[s])
            if adv_images is None:
                raise ArchsimError(
                    f"adversarial set {self.adv_keys[s][:12]} vanished from the cache during the run; rerun to "
                    "recompute it"
                )
            feeds = {t: _Rebatcher(model, sizes[t]) for t, model in members}
            start = 0
            with precision_context(self.device, self.precision):
                for rows in adv_images.batches("images", read_size):
                    self.store.count_read(rows.nbytes)
                    self.bytes_read += rows.nbytes
                    for t, _ in members:
                        began = time.perf_counter()
                        feeds[t].add(rows[self.needed[t][s][start : start + len(rows)]])
                        self.timings[t]["evaluate_s"] += time.perf_counter() - began
                    start += len(rows)
            for t, _ in members:
                began = time.perf_counter()
                with precision_context(self.device, self.precision):
                    labels = feeds[t].finish()
                self.timings[t]["evaluate_s"] += time.perf_counter() - began
                mask = self.needed[t][s]
                self.timings[t]["images"] += int(mask.sum())
                self.evaluated += int(mask.sum())
                self.predictions[t][s][mask] = labels
                self.store.put_computed("pred", self.todo[t][s], {"pred": self.predictions[t][s]})

    def batch_sizes(self, group: list[tuple[int, SimModel]]) -> dict[int, int]:
        """Each resident target's evaluation batch size, searched (and cached) for the work it has."""
        n_images = len(self.predictions[group[0][0]][0])
        sizes = {}
        for t, model in group:
            searched = search_seconds()
            work = int(sum(self.needed[t][s].sum() for s in self.todo[t]))
            shape = (self.own_views and model.preprocess.input_size) or self.image_shape
            sizes[t] = batch_size_for(
                model, self.batch_size, "evaluate", shape, n_images, self.store, self.precision, work
            )
            self.timings[t]["search_s"] += search_seconds() - searched
        return sizes

    def outcome(self) -> EvaluationOutcome:
        return EvaluationOutcome(
            [compact_labels(p) for p in self.predictions],
            self.bytes_read,
            self.evaluated,
            self.skipped,
            self.timings,
            self.groups,
        )


class _Rebatcher:
    """Feeds one target the rows it needs in batches of exactly its own size, whatever size they are read in:
    the same batches (and so the same floating-point results) as reading the set at that size."""

    def __init__(self, model: SimModel, size: int) -> None:
        self.model, self.size = model, size
        self.waiting: list[np.ndarray] = []
        self.count = 0
        self.outputs: list[torch.Tensor] = []

    def add(self, rows: np.ndarray) -> None:
        if len(rows):
            self.waiting.append(rows)
            self.count += len(rows)
        while self.count >= self.size:
            self._forward(self.size)

    def finish(self) -> np.ndarray:
        if self.count:
            self._forward(self.count)
        # The labels stay on the device until the set is done: no wait for a copy per batch.
        return torch.cat(self.outputs).cpu().numpy() if self.outputs else np.empty(0, dtype=np.int64)

    def _forward(self, size: int) -> None:
        rows = np.concatenate(self.waiting) if len(self.waiting) > 1 else self.waiting[0]
        batch, rest = rows[:size], rows[size:]
        self.waiting, self.count = ([rest] if len(rest) else []), len(rest)
        with torch.inference_mode():
            logits = self.model(
                to_device(torch.from_numpy(np.ascontiguousarray(batch)), self.model.device).float().div_(255.0)
            ).float()
            self.outputs.append(logits.argmax(-1))


def target_groups(n_targets: int, slots: int) -> list[list[int]]:
    """Targets split into ``slots`` contiguous groups of near-equal size (fewer if there are fewer targets)."""
    return [
        list(map(int, chunk))
        for chunk in np.array_split(np.arange(n_targets), min(max(slots, 1), n_targets))
        if len(chunk)
    ]


def run_transfer(
    specs: list[str],
    data: ImageSet,
    attack: Attack,
    cache: CacheStore,
    seed: int = 0,
    batch_size: int | str = "auto",
    engine: Engine | None = None,
    describe: Callable[[SimModel], dict | None] | None = None,
    precision: str = "fp32",
    compile: bool = False,
    keep_going: bool = False,
    max_resident: int | str = AUTO,
    check_models: bool = True,
) -> TransferResult:
    """Check every model, attack each source once, then evaluate the targets on the adversarial sets.

    ``engine`` runs the per-model tasks (default: this process, on the CPU);
    ``describe`` gives each model's card during its attack task. ``precision``
    (``fp32`` or ``bf16``, see :func:`archsim.models.check_precision`) enters the
    cache keys; ``compile`` runs the models through ``torch.compile``. A model that
    fails the check (:func:`preflight`) stops the run before any attack, or with
    ``keep_going`` is left out (``result.left_out``). Evaluation keeps up to
    ``max_resident`` targets loaded per engine slot and reads each set once per
    such group (:func:`evaluate_targets`); it evaluates target t on source s's image
    only where both classify the clean image correctly, the images SAT counts.
    ``check_models=False`` skips the check, for models a run has just checked.
    """
    from archsim.engines import LocalEngine

    check_precision(precision)
    check_model_specs(specs)
    engine = engine or LocalEngine("cpu")
    if isinstance(engine, LocalEngine):
        # One after another, the tasks below would train missing zoo models one at a time;
        # Ray tasks already train theirs side by side, on their nodes.
        train_zoo(specs, cache)
    started = time.perf_counter()
    data.key  # noqa: B018 - computed here, once: it travels with the set to every task (a folder's key hashes its files)
    if isinstance(engine, LocalEngine):
        # The attack tasks run here, after the checks: the models the check built are kept for them, as memory allows.
        CHECKED.limit = resident_budget(torch.device(engine.device)).bytes
    try:
        left_out = preflight(engine, specs, data, cache, precision, compile, keep_going) if check_models else {}
        specs = [spec for spec in specs if spec not in left_out]
        if len(specs) < 2:
            raise ArchsimError(
                f"only {len(specs)} of the models can run; SAT needs two (left out: "
                f"{'; '.join(f'{k}: {v}' for k, v in left_out.items())})"
            )
        checked = time.perf_counter()
        read_before = cache.bytes_read
        sources: list[SourceOutcome] = engine.map(
            attack_source,
            [(spec, data, attack, seed, batch_size, describe, precision, compile) for spec in specs],
            cache,
            "attack sources",
            specs,
        )
    finally:
        CHECKED.release()
    attacked, stage1_read = time.perf_counter(), cache.bytes_read - read_before
    names = [source.name for source in sources]
    adv_keys = [source.adv_key for source in sources]
    logits = stacked_logits(cache, [s.clean_key for s in sources])
    correct = predicted_labels(logits) == data.labels.numpy()[None, :]
    # The barrier between the stages: no evaluation task waits on (or holds a device for) an unfinished attack.
    outcomes = evaluate_stage(
        engine,
        specs,
        sources,
        correct,
        data,
        cache,
        batch_size=batch_size,
        precision=precision,
        compile=compile,
        max_resident=max_resident,
    )
    adv_pred = np.stack([p for outcome in outcomes for p in outcome.predictions], axis=1)  # [source, target, image]
    cost = cost_record(
        sources,
        outcomes,
        preflight_s=checked - started,
        attack_s=attacked - checked,
        evaluate_s=time.perf_counter() - attacked,
        stage1_read=stage1_read,
    )
    timings = timings_table(
        sources, [t for o in outcomes for t in o.timings], len(data), attack.config().get("steps", 1)
    )
    return TransferResult(
        names=names,
        specs=list(specs),
        labels=data.labels.numpy(),
        clean_logits=logits,
        adv_pred=adv_pred,
        fingerprints=[s.fingerprint for s in sources],
        adv_keys=adv_keys,
        info=[s.info for s in sources],
        cards=[s.card for s in sources],
        left_out=left_out,
        cost=cost,
        timings=timings,
    )


def evaluate_stage(
    engine: Engine,
    specs: list[str],
    sources: list[SourceOutcome],
    correct: np.ndarray,
    data: ImageSet,
    cache: CacheStore,
    *,
    batch_size: int | str,
    precision: str,
    compile: bool,
    max_resident: int | str,
) -> list[EvaluationOutcome]:
    """Stage 2: the targets in one group per engine slot (:func:`evaluate_targets`), each evaluated on every set where
    it and the source both classify the clean image correctly (``correct``: [models, images])."""
    names = [source.name for source in sources]
    adv_keys = [source.adv_key for source in sources]
    groups = target_groups(len(specs), engine.slots)
    image_shape = tuple(data.images.shape[1:])
    return engine.map(
        evaluate_targets,
        [
            (
                [(specs[t], sources[t].fingerprint) for t in group],
                adv_keys,
                [correct & correct[t] for t in group],
                image_shape,
                batch_size,
                precision,
                compile,
                max_resident,
                data.views == "own",
            )
            for group in groups
        ],
        cache,
        "evaluate targets",
        [", ".join(names[t] for t in group) for group in groups],
    )


class TransferCost(TypedDict):
    """What a transfer's stages cost (a run's ``config["cost"]``, written to JSON as it is)."""

    preflight_s: float
    """Seconds of the check every model gets before any attack."""
    attack_stage_s: float
    evaluate_stage_s: float
    stage1_cache_bytes_read: int
    """Bytes the attack stage read from the cache (cached predictions and sets of a resumed run)."""
    adversarial_bytes: int
    """Bytes of all the adversarial sets."""
    stage2_adversarial_bytes_read: int
    stage2_read_ratio: float
    """Bytes of sets the evaluation read over the bytes of the sets: 1.0 when each set is read once."""
    stage2_groups: int
    """Groups of resident targets: each set is read once per group."""
    stage2_images_evaluated: int
    stage2_images_skipped: int
    """Images no output needs (a target or source wrong on the clean image), left out of the evaluation."""


def cost_record(
    sources: list[SourceOutcome],
    outcomes: list[EvaluationOutcome],
    *,
    preflight_s: float,
    attack_s: float,
    evaluate_s: float,
    stage1_read: int,
) -> TransferCost:
    """What the stages cost: seconds, bytes of the cache read, and the images evaluated and skipped (config.json's
    ``cost``)."""
    set_bytes = sum(int(np.prod(s.adv_shape)) for s in sources)
    stage2_read = sum(o.adversarial_bytes_read for o in outcomes)
    return {
        "preflight_s": round(preflight_s, 3),
        "attack_stage_s": round(attack_s, 3),
        "evaluate_stage_s": round(evaluate_s, 3),
        "stage1_cache_bytes_read": int(stage1_read),
        "adversarial_bytes": set_bytes,
        "stage2_adversarial_bytes_read": int(stage2_read),
        "stage2_read_ratio": round(stage2_read / set_bytes, 4) if set_bytes else 0.0,
        "stage2_groups": sum(o.groups for o in outcomes),
        "stage2_images_evaluated": sum(o.images_evaluated for o in outcomes),
        "stage2_images_skipped": sum(o.images_skipped for o in outcomes),
    }


def timings_table(sources: list[SourceOutcome], timings: list[dict], n_images: int, steps: int) -> pd.DataFrame:
    """Per model: seconds of each part of its attack task and its evaluation, and their rates (NaN where cached)."""
    return pd.DataFrame(
        {
            "model": [source.name for source in sources],
            "load_s": [s.timing.get("load_s", 0.0) for s in sources],
            "clean_s": [s.timing.get("clean_s", 0.0) for s in sources],
            "attack_s": [s.timing.get("attack_s", 0.0) for s in sources],
            "search_s": [s.timing.get("search_s", 0.0) for s in sources],
            "attack_image_steps_per_s": [
                n_images * steps / s.timing["attack_s"] if s.timing.get("attack_s") else np.nan for s in sources
            ],
            "evaluate_load_s": [t["load_s"] for t in timings],
            "evaluate_s": [t["evaluate_s"] for t in timings],
            "evaluate_search_s": [t["search_s"] for t in timings],
            "evaluated_images": [t["images"] for t in timings],
            "evaluate_images_per_s": [t["images"] / t["evaluate_s"] if t["evaluate_s"] else np.nan for t in timings],
        }
    )


def stacked_logits(store: CacheStore, clean_keys: list[str]) -> np.ndarray:
    """The clean logits of every model, [models, images, classes], memory-mapped from one cache entry.

    The entry is built from the models' own entries one model at a time, so that
    neither stage holds more than one model's logits.
    """
    entries = []
    for key in clean_keys:
        entry = store.open("pred", key)
        if entry is None:
            raise ArchsimError(
                f"clean predictions {key[:12]} vanished from the cache during the run; rerun to recompute them"
            )
        entries.append(entry)
    shape = (len(entries), *entries[0].shape("logits"))
    stacked = store.get_or_stream(
        "logits",
        digest("stacked logits", clean_keys),
        "logits",
        shape,
        np.float32,
        lambda: (entry.array("logits")[None] for entry in entries),
    )
    return stacked.mapped("logits")
