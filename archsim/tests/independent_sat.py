"""SAT written from its definition alone, to check archsim's pipeline against: no archsim code.

Each model is a network with the preprocessing its library states (timm's resolved data config, or the mean, std,
input size and interpolation a test gives). The pieces are the libraries' own: timm's ``create_transform`` makes a
file's view, Pillow resizes arrays, torchattacks' PGD attacks, ``torch.nn.functional.interpolate`` resizes a source's
adversarial image for a target of another size, and the formula is numpy. The method page
(``docs/method.md``) is the definition followed: adversarial images rounded to the uint8 grid inside the radius's
whole levels, X_AB the images both models classify right on their own views, and
``SAT = ln(max(eps_s, 100 (f_AB + f_BA) / (2 |X_AB|)))``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import timm.data
import torch
import torch.nn.functional as F
import torchattacks
import torchvision.transforms as T
from torch import nn


class ReferenceModel(nn.Module):
    """A network and its stated preprocessing: what it sees of a file or an array, and its forward on [0, 1] images."""

    def __init__(
        self,
        net: nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        size: tuple[int, int],
        interpolation: str,
        view_of_file: T.Compose | None = None,
    ) -> None:
        super().__init__()
        # A copy in inference mode: torchattacks restores the mode it found after attacking, and a module left in
        # training mode would evaluate with batch statistics (and move the running ones of a network shared with
        # the pipeline).
        self.net = copy.deepcopy(net)
        self.size, self.interpolation, self.view_of_file = tuple(size), interpolation, view_of_file
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            # A source's adversarial image, made at the source's size, read at this model's ("we resize the attacked
            # image from the source network for the target network").
            mode = self.interpolation if self.interpolation in ("bilinear", "bicubic") else "bicubic"
            x = F.interpolate(x, size=self.size, mode=mode, antialias=True, align_corners=False)
        return self.net((x - self.mean) / self.std)

    def sees(self, item: Path | np.ndarray) -> np.ndarray:
        """uint8 [C, H, W]: a file through the library's evaluation transform, or an array resized whole by Pillow."""
        if isinstance(item, Path):
            with PIL.Image.open(item) as image:
                tensor = self.view_of_file(image.convert("RGB"))  # ToTensor's uint8 / 255, exactly
            return np.round(tensor.numpy() * 255).astype(np.uint8)
        if tuple(item.shape[-2:]) == self.size:
            return item
        image = PIL.Image.fromarray(item[0] if item.shape[0] == 1 else item.transpose(1, 2, 0))
        filters = {"bilinear": PIL.Image.BILINEAR, "bicubic": PIL.Image.BICUBIC, "nearest": PIL.Image.NEAREST}
        resized = np.asarray(image.resize(self.size[::-1], filters[self.interpolation]))
        return resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)


def timm_reference(net: nn.Module) -> ReferenceModel:
    """A timm network as timm evaluates it: ``create_transform(**resolve_data_config(model=net))`` without its final
    normalisation, which the forward does so that the attack differentiates through it."""
    config = timm.data.resolve_data_config({}, model=net)
    transform = timm.data.create_transform(**config)
    *geometry, normalise = transform.transforms
    assert isinstance(normalise, T.Normalize), transform
    return ReferenceModel(
        net,
        tuple(config["mean"]),
        tuple(config["std"]),
        tuple(config["input_size"][1:]),
        config["interpolation"],
        T.Compose(geometry),
    )


@dataclass
class ReferenceSat:
    """What SAT is computed from, and the matrices: ``fooled[s, t]`` counts the images of X_st that target t gets
    wrong on source s's adversarial image; ``both[s, t]`` is |X_st|; ``adv_pred[s, t]`` the labels target t gives
    source s's adversarial images."""

    clean_correct: np.ndarray
    adv_pred: np.ndarray
    adv_wrong: np.ndarray
    both: np.ndarray
    fooled: np.ndarray
    sat: np.ndarray
    one_sided: np.ndarray
    adversarial: list[np.ndarray]


def reference_sat(
    models: list[ReferenceModel],
    items: list[Path] | np.ndarray,
    labels: np.ndarray,
    *,
    eps: float,
    steps: int,
    rel_step: float,
    eps_s: float = 1.0,
) -> ReferenceSat:
    """SAT of ``models`` on ``items`` (image files, or uint8 arrays [N, C, H, W]) under PGD without a random start."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    radius = math.floor(eps * 255 + 1e-6)
    clean_correct, adversarial = [], []
    with torch.no_grad():
        views = [np.stack([model.sees(item) for item in items]) for model in models]
        for model, view in zip(models, views, strict=True):
            clean_correct.append(model(torch.from_numpy(view).float() / 255).argmax(1).numpy() == y.numpy())
    for model, view in zip(models, views, strict=True):
        attack = torchattacks.PGD(model, eps=eps, alpha=rel_step * eps, steps=steps, random_start=False)
        adv = attack(torch.from_numpy(view).float() / 255, y).numpy()
        # A real image: rounded to the uint8 grid, inside the whole levels of the radius and inside 0..255.
        rounded = np.round(adv * 255)
        low, high = np.maximum(view.astype(int) - radius, 0), np.minimum(view.astype(int) + radius, 255)
        adversarial.append(np.clip(rounded, low, high).astype(np.uint8))
    n, m = len(models), len(labels)
    adv_pred = np.zeros((n, n, m), dtype=np.int64)
    with torch.no_grad():
        for s, images in enumerate(adversarial):
            for t, target in enumerate(models):
                adv_pred[s, t] = target(torch.from_numpy(images).float() / 255).argmax(1).numpy()
    adv_wrong = adv_pred != y.numpy()
    clean_correct = np.array(clean_correct)
    both = np.array([[(clean_correct[s] & clean_correct[t]).sum() for t in range(n)] for s in range(n)])
    fooled = np.array(
        [[(clean_correct[s] & clean_correct[t] & adv_wrong[s, t]).sum() for t in range(n)] for s in range(n)]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(both > 0, np.log(np.maximum(eps_s, 100 * (fooled + fooled.T) / (2 * both))), np.nan)
        one_sided = np.where(both > 0, np.log(np.maximum(eps_s, 100 * fooled / both)), np.nan)
    return ReferenceSat(clean_correct, adv_pred, adv_wrong, both, fooled, sat, one_sided, adversarial)
