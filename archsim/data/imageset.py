"""The canonical image container every model and attack consumes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from archsim.errors import ArchsimError


@dataclass(frozen=True)
class ImageSet:
    """Labelled images as uint8 ``[N, C, H, W]`` on a shared storage resolution.

    Models take ``images / 255`` and resize and normalise inside their own forward,
    so any model can consume any set, including adversarial sets made on another
    model.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ArchsimError(f"data {self.name}: images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.images.shape[1] not in (1, 3):
            raise ArchsimError(f"data {self.name}: images need 1 or 3 channels, got {self.images.shape[1]}")
        if len(self.images) != len(self.labels):
            raise ArchsimError(f"data {self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.images) == 0:
            raise ArchsimError(f"data {self.name} holds no images; point it at a folder or file with images")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the pixels, labels and shape: the data part of every cache key."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.to(torch.int64).numpy().tobytes())
        return h.hexdigest()

    def subset(self, indices: np.ndarray) -> "ImageSet":
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name)


def stratified_indices(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of size ``n`` (all if None)."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    if n <= 0:
        raise ArchsimError(f"--n-images must be positive, got {n}")
    n_classes = len(np.unique(labels))
    if n < n_classes:
        raise ArchsimError(f"--n-images {n} is smaller than the {n_classes} classes present; ask for at least {n_classes}")
    try:
        chosen, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    except ValueError:
        # A class with a single image cannot be stratified; fall back to a seeded uniform draw.
        chosen = np.random.default_rng(seed).choice(len(labels), size=n, replace=False)
    return np.sort(chosen)
