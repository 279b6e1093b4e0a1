"""The embedded zoo: small timm models trained by archsim on ``digits``.

Each entry is a timm architecture shrunk to the 32x32 one-channel digits, a
native input resolution (the wrapper resizes canonical images to it), a training
recipe and a seed. Weights are trained on first use and cached by a key over all
of these and the training data, so a given seed always yields the same model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import timm
import torch
from timm.models.mlp_mixer import MlpMixer
from torch import nn

from archsim.cache import CacheStore, digest
from archsim.data import ImageSet, load_data
from archsim.errors import ArchsimError
from archsim.models.parallel import train_side_by_side
from archsim.models.registry import model_schemes, register_source
from archsim.models.train import (
    Recipe,
    arrays_to_state,
    state_to_arrays,
    train_classifier,
)
from archsim.models.wrapper import Preprocess, SimModel
from archsim.specs import Spec, parse_spec

ZOO_MEAN = (0.5,)
ZOO_STD = (0.5,)


@dataclass(frozen=True)
class ZooEntry:
    """One embedded model: timm architecture, input side, recipe, seed."""

    family: str
    architecture: str
    kwargs: dict = field(default_factory=dict)
    input_side: int = 32
    recipe: Recipe = Recipe()
    seed: int = 0
    in_default_run: bool = True

    @property
    def regime(self) -> str:
        """The training regime its recipe makes (for the training-vs-architecture table and ``archsim zoo``), read off
        the recipe so the label cannot disagree with how the model was trained."""
        if self.recipe.adversarial_eps:
            return "adversarial"
        parts = [
            name
            for name, on in (
                ("label-smoothing", self.recipe.label_smoothing),
                ("augmentation", self.recipe.augment != "none"),
            )
            if on
        ]
        return "+".join(parts) or "standard"

    @property
    def hparams(self) -> str:
        """The optimiser's hyper-parameters of its recipe (learning rate, weight decay, batch, epochs, warm-up), the
        label by which the training-vs-architecture table tells a change of hyper-parameters within a regime."""
        r = self.recipe
        return f"lr={r.lr:g},wd={r.weight_decay:g},batch={r.batch_size},epochs={r.epochs},warmup={r.warmup_epochs}"

    def build(self, num_classes: int = 10) -> nn.Module:
        common = dict(num_classes=num_classes, in_chans=1)
        if self.architecture == "mlp_mixer":
            # timm's mixer_* registrations fix patch_size, so the class is built directly.
            return MlpMixer(**common, **self.kwargs)
        return timm.create_model(self.architecture, pretrained=False, **common, **self.kwargs)

    def preprocess(self) -> Preprocess:
        return Preprocess((1, self.input_side, self.input_side), ZOO_MEAN, ZOO_STD, "bilinear")

    def describe(self) -> dict:
        return {
            "architecture": self.architecture,
            "kwargs": self.kwargs,
            "input_side": self.input_side,
            "recipe": self.recipe.describe(),
            "seed": self.seed,
        }


_RESNET = dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16)
_AUGMENTED = Recipe(augment="affine", epochs=25)

ZOO: dict[str, ZooEntry] = {
    "resnet-s0": ZooEntry("ResNet", "resnet18", _RESNET, 16, seed=0),
    "resnet-s1": ZooEntry("ResNet", "resnet18", _RESNET, 16, seed=1),
    "resnet-s2": ZooEntry("ResNet", "resnet18", _RESNET, 16, seed=2),
    "resnet-ls": ZooEntry("ResNet", "resnet18", _RESNET, 16, Recipe(label_smoothing=0.1)),
    "resnet-aug": ZooEntry("ResNet", "resnet18", _RESNET, 16, _AUGMENTED),
    "seresnet": ZooEntry("ResNet", "resnet18", dict(_RESNET, block_args=dict(attn_layer="se")), 16),
    "vit": ZooEntry(
        "ViT",
        "vit_tiny_patch16_224",
        dict(img_size=24, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        24,
        Recipe(augment="affine", epochs=40),
    ),
    "mixer": ZooEntry(
        "MLP-Mixer",
        "mlp_mixer",
        dict(img_size=16, patch_size=2, num_blocks=4, embed_dim=64, mlp_ratio=(0.5, 2.0)),
        16,
        _AUGMENTED,
    ),
    "convnext": ZooEntry("ConvNeXt", "convnext_atto", dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128)), 32),
    # 30 epochs: 20 left it at 93.3-96.7 % on the eval digits over seeds 0-2, 30 at 96.9-97.2 %.
    "mobilenetv3": ZooEntry(
        "MobileNet", "mobilenetv3_small_050", {}, 24, Recipe(lr=5e-3, weight_decay=0.01, augment="affine", epochs=30)
    ),
    "mobilevit": ZooEntry("MobileViT (hybrid)", "mobilevit_xxs", {}, 24),
    # PGD adversarial training at the default attack radius on digits (archsim.runs.DIGITS_EPS): the
    # SAT paper's third further check (docs/method.md#analysis, archsim checks --adversarial). Not in the default
    # run, whose matrix is the paper's standard-training zoo.
    "resnet-adv": ZooEntry("ResNet", "resnet18", _RESNET, 16, Recipe(adversarial_eps=0.1), in_default_run=False),
    # Two more seeds: the paper's check compares several adversarially trained models of one architecture.
    "resnet-adv-s1": ZooEntry(
        "ResNet", "resnet18", _RESNET, 16, Recipe(adversarial_eps=0.1), seed=1, in_default_run=False
    ),
    "resnet-adv-s2": ZooEntry(
        "ResNet", "resnet18", _RESNET, 16, Recipe(adversarial_eps=0.1), seed=2, in_default_run=False
    ),
}


def zoo_specs() -> list[str]:
    """The models of a run without ``--models``."""
    return [f"zoo:{name}" for name, entry in ZOO.items() if entry.in_default_run]


def zoo_key(entry: ZooEntry, train: ImageSet) -> str:
    return digest("zoo", entry.describe(), train.fingerprint, timm.__version__)


def checkpoint_key(entry: ZooEntry, train: ImageSet, epoch: int) -> str:
    return digest("zoo-checkpoint", entry.describe(), train.fingerprint, timm.__version__, epoch)


def zoo_weights(name: str, cache: CacheStore, epoch: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Trained weights of a zoo entry (trained and cached on first use) and training facts.

    ``epoch``: the weights at the end of that training epoch instead (docs/method.md#analysis). The
    first request retrains the entry keeping every epoch and caches them all; the
    last epoch is the final model itself.
    """
    entry = ZOO[name]
    train = load_data("digits", split="train")
    evaluation = load_data("digits", split="eval")
    if epoch is not None and not 1 <= epoch <= entry.recipe.epochs:
        raise ArchsimError(
            f"zoo:{name} trains for {entry.recipe.epochs} epochs; choose epoch= between 1 and {entry.recipe.epochs}"
        )
    if epoch is not None and epoch < entry.recipe.epochs:
        return _checkpoint_weights(name, entry, train, evaluation, epoch, cache)

    def fit() -> dict:
        started = time.perf_counter()
        state, _ = train_classifier(
            entry.build, entry.preprocess(), train, entry.recipe, entry.seed, f"train zoo:{name}"
        )
        seconds = time.perf_counter() - started
        net = entry.build()
        net.load_state_dict(state)
        accuracy = _accuracy(SimModel(net, entry.preprocess(), name, f"zoo:{name}"), evaluation)
        print(f"trained zoo:{name:<14} eval accuracy {100 * accuracy:5.1f}%  ({seconds:.0f} s)", flush=True)
        return {**state_to_arrays(state), "eval_accuracy": accuracy, "train_seconds": seconds}

    arrays = cache.get_or_compute("zoo", zoo_key(entry, train), fit)
    return arrays_to_state(arrays), {
        "eval_accuracy": float(arrays["eval_accuracy"]),
        "train_seconds": float(arrays["train_seconds"]),
    }


def train_zoo(specs: Sequence[str], cache: CacheStore, processes: int | None = None) -> None:
    """Train the zoo models among ``specs`` whose weights are not cached yet, side by side
    (:func:`archsim.models.parallel.train_side_by_side`, one model per core).

    The weights are the same as one model after another would give. Other specs,
    and zoo checkpoints (``epoch=``), are left to whoever loads them.
    """
    train = load_data("digits", split="train")
    missing = []
    for text in specs:
        try:
            spec = parse_spec(text, model_schemes())
        except ArchsimError:
            continue  # reported by create_model, in the order the run loads its models
        spec.take("name")
        if spec.scheme == "zoo" and spec.target in ZOO and not spec.options and spec.target not in missing:
            if not cache.contains("zoo", zoo_key(ZOO[spec.target], train)):
                missing.append(spec.target)
    missing.sort(key=lambda name: -training_cost(ZOO[name]))
    train_side_by_side([(zoo_weights, (name,)) for name in missing], cache, "train zoo", processes)


def training_cost(entry: ZooEntry, images: int = 1) -> int:
    """Epochs times layers (times ``images``): these tiny networks take a CPU time set by the number
    of layers run more than by their arithmetic (it orders the zoo's training times but for vit and mobilevit).

    An adversarial recipe's attack steps count half a training step each (forward and input gradient,
    no weight gradients or update): resnet-adv, 7 steps, took 4.5x resnet-s0's time (48 s against 10.6 s).
    """
    recipe = entry.recipe
    attack = 1 + recipe.adversarial_steps / 2 if recipe.adversarial_eps else 1
    return int(
        images * recipe.epochs * attack * sum(1 for module in entry.build().modules() if not list(module.children()))
    )


def _checkpoint_weights(
    name: str, entry: ZooEntry, train: ImageSet, evaluation: ImageSet, epoch: int, cache: CacheStore
):
    key = checkpoint_key(entry, train, epoch)

    def fit() -> dict:
        _, checkpoints = train_classifier(
            entry.build, entry.preprocess(), train, entry.recipe, entry.seed, f"train zoo:{name} (checkpoints)", True
        )
        found = {}
        for number, state in enumerate(checkpoints[:-1], start=1):
            net = entry.build()
            net.load_state_dict(state)
            accuracy = _accuracy(SimModel(net, entry.preprocess(), name, f"zoo:{name}"), evaluation)
            arrays = {**state_to_arrays(state), "eval_accuracy": accuracy, "train_seconds": np.nan}
            cache.put("zoo", checkpoint_key(entry, train, number), arrays)  # one training serves every epoch
            found[number] = arrays
        return found[epoch]

    arrays = cache.get_or_compute("zoo", key, fit)
    return arrays_to_state(arrays), {"eval_accuracy": float(arrays["eval_accuracy"]), "epoch": epoch}


def _accuracy(model: SimModel, data: ImageSet) -> float:
    with torch.inference_mode():
        predictions = model(data.images.float() / 255.0).argmax(1)
    return float((predictions == data.labels).float().mean())


def zoo_options(spec: Spec) -> dict[str, Any]:
    """A ``zoo:`` spec's target and options, taken and checked (its model's name among them); builds nothing."""
    if spec.target not in ZOO:
        raise ArchsimError(f"unknown zoo model {spec.target!r}; choose from {', '.join(ZOO)}")
    epoch = spec.take_int("epoch")
    return {"epoch": epoch, "name": spec.target if epoch is None else f"{spec.target}@{epoch}"}


@register_source("zoo", check=lambda spec: zoo_options(spec)["name"])
def zoo_model(spec: Spec, cache: CacheStore) -> SimModel:
    """``zoo:NAME[,epoch=E]``: an embedded digits model (see ``archsim zoo``);
    ``epoch=E`` its weights after E training epochs."""
    options = zoo_options(spec)
    entry = ZOO[spec.target]
    state, facts = zoo_weights(spec.target, cache, options["epoch"])
    net = entry.build()
    net.load_state_dict(state)
    info = {
        "source": "zoo",
        "family": entry.family,
        "regime": entry.regime,
        "hparams": entry.hparams,
        "seed": entry.seed,
        **facts,
    }
    return SimModel(net, entry.preprocess(), options["name"], spec.text, info)
