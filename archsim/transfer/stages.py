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

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from archsim.attacks import Attack
from archsim.attacks.base import copy_to_host, to_device
from archsim.cache import CacheStore, digest
from archsim.data import ImageSet, imagenet_wnids
from archsim.errors import ArchsimError
from archsim.models import SimModel, check_model_specs, check_precision, create_model, precision_context, prepare, train_zoo
from archsim.transfer.batching import Purpose, batch_size_for

if TYPE_CHECKING:
    from archsim.engines import Engine


@dataclass
class TransferResult:
    """Everything SAT and later analyses need from one run.

    ``clean_logits[n]``: model n on the clean set, [M, C] (read-only, memory-mapped
    from the cache by :func:`run_transfer`); ``adv_pred[s, t]``: target t's predicted
    labels on source s's adversarial set, [M].
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

    @cached_property
    def clean_pred(self) -> np.ndarray:
        # Cached: every read of a mapped array larger than memory goes back to the disk.
        return predicted_labels(self.clean_logits)

    @property
    def clean_correct(self) -> np.ndarray:
        return self.clean_pred == self.labels[None, :]

    @property
    def adv_wrong(self) -> np.ndarray:
        return self.adv_pred != self.labels[None, None, :]

    def models_table(self) -> pd.DataFrame:
        diag = np.array([self.adv_wrong[i, i][self.clean_correct[i]].mean() if self.clean_correct[i].any() else np.nan for i in range(len(self.names))])
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
                "seed": [i.get("seed") for i in self.info],
            }
        )


def adv_key(fingerprint: str, data: ImageSet, attack: Attack, seed: int, precision: str = "fp32") -> str:
    return digest("adv", fingerprint, data.fingerprint, attack.config(), seed, *_precision_part(precision))


def pred_key(fingerprint: str, images_key: str, precision: str = "fp32") -> str:
    return digest("pred", fingerprint, images_key, *_precision_part(precision))


def _precision_part(precision: str) -> tuple[dict, ...]:
    # fp32 adds nothing, so the keys of runs made before precision was an option stay valid.
    return () if precision == "fp32" else ({"precision": precision},)


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Class indices in int16 where they fit (up to 32,767 classes), else int32: a quarter of
    numpy's int64 for results of sources x targets x images."""
    return labels.astype(np.int16 if labels.size == 0 or labels.max() < 2**15 else np.int32, copy=False)


def predicted_labels(logits: np.ndarray) -> np.ndarray:
    """Compact argmax over the classes of [models, images, classes] logits, a model at a time:
    numpy's argmax first copies a read-only (memory-mapped) array whole."""
    return compact_labels(np.stack([rows.argmax(-1) for rows in logits]))


def predict(model: SimModel, images: torch.Tensor, batch_size: int, desc: str | None = None) -> torch.Tensor:
    """Logits of ``model`` on uint8 ``images``, batched, under inference mode."""
    batches = (images[start : start + batch_size] for start in range(0, len(images), batch_size))
    return torch.cat(list(predict_stream(model, batches, desc=desc, total=-(-len(images) // batch_size))))


def predict_stream(
    model: SimModel, batches: Iterable[torch.Tensor], reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str | None = None, total: int | None = None,
) -> Iterator[torch.Tensor]:
    """Logits of ``model`` on each uint8 batch (or ``reduce`` of them, computed on the device), on the CPU.

    Each batch is handed back one batch late: its copy to the CPU is queued behind its
    forward, and the host waits for it while the device already works on the next batch.
    """
    pending = None
    for batch in tqdm(batches, desc=desc, total=total, unit="batch", leave=False, disable=None if desc else True):
        # Entered per batch, not around the loop: a mode entered in a generator would leak into its caller at each yield.
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
        fix = ("its class folders are ImageNet-1k WordNet ids: add ,classes=imagenet to the data spec"
               if wnid_folders and model.num_outputs == len(imagenet_wnids())
               else "use data with the model's classes or a model built for them (e.g. num_classes=)")
        raise ArchsimError(f"model {model.name} outputs {model.num_outputs} classes but data {data.name} has {data.num_classes}; {fix}")


@dataclass
class SourceOutcome:
    """What stage 1 learns of one model; ``card`` is None without a ``describe``."""

    name: str
    fingerprint: str
    info: dict
    card: dict | None
    adv_key: str
    clean_key: str


def attack_source(
    device: str, store: CacheStore, spec: str, data: ImageSet, attack: Attack, seed: int, batch_size: int | str,
    describe: Callable[[SimModel], dict | None] | None = None, precision: str = "fp32", compile: bool = False,
) -> SourceOutcome:
    """Stage-1 task: load one model, cache its clean logits and its adversarial set."""
    model = create_model(spec, cache=store, device=device)
    check_compatible(model, data)
    prepare(model, precision, compile)

    def sized(purpose: Purpose) -> int:
        # Searched only when something is computed: a run found in the cache measures nothing.
        return batch_size_for(model, batch_size, purpose, tuple(data.images.shape[1:]), len(data), store, precision)

    def clean_logits() -> Iterator[np.ndarray]:
        return (logits.numpy() for logits in predict_stream(model, data.batches(sized("evaluate"))))

    def adversarial_set() -> Iterator[np.ndarray]:
        size = sized("attack")
        return (adv.numpy() for adv in attack.stream(model, data.batches(size), data.labels, seed, size, f"attack {model.name}"))

    with precision_context(device, precision):
        clean_key = pred_key(model.fingerprint, data.fingerprint, precision)
        store.get_or_stream("pred", clean_key, "logits", (len(data.labels), model.num_outputs), np.float32, clean_logits)
        key = adv_key(model.fingerprint, data, attack, seed, precision)
        # Checked, not just found: a damaged set is found and recomputed here, while the source is loaded.
        store.get_or_stream("adv", key, "images", tuple(data.images.shape), np.uint8, adversarial_set)
    card = describe(model) if describe is not None else None
    return SourceOutcome(model.name, model.fingerprint, {**model.info, "architecture": model.architecture_id}, card, key, clean_key)


def evaluate_target(
    device: str, store: CacheStore, spec: str, fingerprint: str, adv_keys: list[str], batch_size: int | str,
    precision: str = "fp32", compile: bool = False,
) -> np.ndarray:
    """Stage-2 task: one target's predicted labels on every source's set, [sources, images], compact integers.

    The target is loaded only if some prediction is missing from the cache.
    """
    loaded: list[SimModel] = []

    def target() -> SimModel:
        if not loaded:
            loaded.append(create_model(spec, cache=store, device=device))
            if loaded[0].fingerprint != fingerprint:
                raise ArchsimError(f"model {spec} changed during the run (different weights); rerun")
            prepare(loaded[0], precision, compile, purpose="evaluate")
        return loaded[0]

    def predict_set(key: str) -> dict:
        adv_images = store.open("adv", key)
        if adv_images is None:
            raise ArchsimError(f"adversarial set {key[:12]} vanished from the cache during the run; rerun to recompute it")
        shape = adv_images.shape("images")
        size = batch_size_for(target(), batch_size, "evaluate", shape[1:], shape[0], store, precision)
        with precision_context(device, precision):
            batches = (torch.from_numpy(rows) for rows in adv_images.batches("images", size))
            # The labels are taken on the device: copying whole logits back would move classes-times more bytes.
            return {"pred": torch.cat(list(predict_stream(target(), batches, reduce=lambda logits: logits.argmax(-1)))).numpy()}

    return compact_labels(np.stack([
        store.get_or_compute("pred", pred_key(fingerprint, key, precision), lambda key=key: predict_set(key))["pred"] for key in adv_keys
    ]))


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
) -> TransferResult:
    """Attack each source once, then evaluate each target on the clean and all adversarial sets.

    ``engine`` runs the per-model tasks (default: this process, on the CPU);
    ``describe`` gives each model's card during its attack task. ``precision``
    (``fp32`` or ``bf16``, see :func:`archsim.models.check_precision`) enters the
    cache keys; ``compile`` runs the models through ``torch.compile``.
    """
    from archsim.engines import LocalEngine

    check_precision(precision)
    check_model_specs(specs)
    engine = engine or LocalEngine("cpu")
    if isinstance(engine, LocalEngine):
        # One after another, the tasks below would train missing zoo models one at a time;
        # Ray tasks already train theirs side by side, on their nodes.
        train_zoo(specs, cache)
    sources: list[SourceOutcome] = engine.map(
        attack_source, [(spec, data, attack, seed, batch_size, describe, precision, compile) for spec in specs], cache,
        "attack sources", specs,
    )
    names = [source.name for source in sources]
    adv_keys = [source.adv_key for source in sources]
    # The barrier between the stages: no evaluation task waits on (or holds a device for) an unfinished attack.
    predictions = engine.map(
        evaluate_target, [(spec, source.fingerprint, adv_keys, batch_size, precision, compile) for spec, source in zip(specs, sources)], cache,
        "evaluate targets", specs,
    )
    adv_pred = np.stack(predictions, axis=1)  # [source, target, image]
    return TransferResult(
        names, list(specs), data.labels.numpy(), stacked_logits(cache, [s.clean_key for s in sources]), adv_pred,
        [s.fingerprint for s in sources], adv_keys, [s.info for s in sources], [s.card for s in sources],
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
            raise ArchsimError(f"clean predictions {key[:12]} vanished from the cache during the run; rerun to recompute them")
        entries.append(entry)
    shape = (len(entries), *entries[0].shape("logits"))
    stacked = store.get_or_stream(
        "logits", digest("stacked logits", clean_keys), "logits", shape, np.float32, lambda: (entry.array("logits")[None] for entry in entries)
    )
    return stacked.mapped("logits")
