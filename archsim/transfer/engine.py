"""Attack every source once, evaluate every target once on every set; all cached by content.

Stage 1 (attack): per source, its clean logits and its adversarial set.
Stage 2 (evaluate): per target, loaded once, the predictions on every source's set.
Cache keys: model fingerprint (architecture, weights, preprocessing), data
fingerprint (pixels and labels) and the attack's settings, so a second run with
the same inputs recomputes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from archsim.attacks import Attack
from archsim.cache import CacheStore, digest
from archsim.data import ImageSet
from archsim.errors import ArchsimError
from archsim.models import SimModel, create_model

ModelLoader = Callable[[str], SimModel]


@dataclass
class TransferResult:
    """Everything SAT and later analyses need from one run.

    ``clean_logits[n]``: model n on the clean set, [M, C]; ``adv_pred[s, t]``:
    target t's predicted labels on source s's adversarial set, [M].
    """

    names: list[str]
    specs: list[str]
    labels: np.ndarray
    clean_logits: np.ndarray
    adv_pred: np.ndarray
    fingerprints: list[str]
    adv_keys: list[str]
    info: list[dict] = field(default_factory=list)

    @property
    def clean_pred(self) -> np.ndarray:
        return self.clean_logits.argmax(-1)

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


def adv_key(fingerprint: str, data: ImageSet, attack: Attack, seed: int) -> str:
    return digest("adv", fingerprint, data.fingerprint, attack.config(), seed)


def pred_key(fingerprint: str, images_key: str) -> str:
    return digest("pred", fingerprint, images_key)


def predict(model: SimModel, images: torch.Tensor, batch_size: int, desc: str | None = None) -> torch.Tensor:
    """Logits of ``model`` on uint8 ``images``, batched, under inference mode."""
    outs = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=None if desc else True):
            batch = images[start : start + batch_size].to(model.device, non_blocking=True)
            outs.append(model(batch.float().div_(255.0)).float().cpu())
    return torch.cat(outs)


def check_compatible(model: SimModel, data: ImageSet) -> None:
    if model.num_outputs != data.num_classes:
        raise ArchsimError(
            f"model {model.name} outputs {model.num_outputs} classes but data {data.name} has {data.num_classes}; "
            "use data with the model's classes or a model built for them (e.g. num_classes=)"
        )


def run_transfer(
    specs: list[str],
    data: ImageSet,
    attack: Attack,
    cache: CacheStore,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 128,
    loader: ModelLoader | None = None,
) -> TransferResult:
    """Attack each source once, then evaluate each target on the clean and all adversarial sets."""
    load = loader or (lambda spec: create_model(spec, cache=cache, device=device))
    names, fingerprints, adv_keys, logits, info = [], [], [], [], []
    for spec in specs:
        model = load(spec)
        check_compatible(model, data)
        if model.name in names:
            raise ArchsimError(f"two models are named {model.name!r}; give one a name with ,name=OTHER in its spec")
        names.append(model.name)
        fingerprints.append(model.fingerprint)
        info.append({**model.info, "architecture": model.architecture_id})
        clean = cache.get_or_compute(
            "pred", pred_key(model.fingerprint, data.fingerprint), lambda: {"logits": predict(model, data.images, batch_size).numpy()}
        )
        logits.append(clean["logits"])
        key = adv_key(model.fingerprint, data, attack, seed)
        adv_keys.append(key)
        # A read, not an existence check: a damaged set is found and recomputed here, while the source is loaded.
        cache.get_or_compute(
            "adv", key, lambda: {"images": attack(model, data.images, data.labels, seed, batch_size, f"attack {model.name}").numpy()}
        )
        del model

    adv_pred = np.empty((len(specs), len(specs), len(data)), dtype=np.int64)
    for t, spec in enumerate(tqdm(specs, desc="evaluate targets", unit="model", disable=None)):
        loaded: list[SimModel] = []  # the target, loaded only if some prediction is missing

        def target() -> SimModel:
            if not loaded:
                loaded.append(load(spec))
                if loaded[0].fingerprint != fingerprints[t]:
                    raise ArchsimError(f"model {spec} changed during the run (different weights); rerun")
            return loaded[0]

        def predict_set(s: int) -> dict:
            adv_images = torch.from_numpy(cache.get_or_compute("adv", adv_keys[s], _missing(adv_keys[s]))["images"])
            return {"pred": predict(target(), adv_images, batch_size).argmax(-1).numpy()}

        for s in range(len(specs)):
            adv_pred[s, t] = cache.get_or_compute("pred", pred_key(fingerprints[t], adv_keys[s]), lambda: predict_set(s))["pred"]
    return TransferResult(names, list(specs), data.labels.numpy(), np.stack(logits), adv_pred, fingerprints, adv_keys, info)


def _missing(key: str) -> Callable[[], dict]:
    def fail() -> dict:
        raise ArchsimError(f"adversarial set {key[:12]} vanished from the cache during the run; rerun to recompute it")

    return fail
