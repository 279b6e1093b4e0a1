"""The image container every model and attack consumes, and the views of it each model sees."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from archsim.cache import CacheStore, StoredArrays, digest
from archsim.data.views import View, resize_rows
from archsim.errors import ArchsimError, ParameterError
from archsim.params import RULES

VIEWS = RULES["views"].choices
"""How models see a set: ``own``, each its own evaluation view of every image, attacked at its own resolution (the SAT
paper's protocol); ``shared``, one stored pixel space that every model resizes inside its forward."""


class StoredImages:
    """uint8 images ``[N, C, H, W]`` held in a cache entry and read in batches of rows.

    A data set larger than memory runs through the attacks and evaluations this way;
    only one batch is in memory at a time. The entry also holds the labels and the
    set's fingerprint, computed when it was written.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, entry: StoredArrays | Callable[[], StoredArrays], shape: tuple[int, ...] | None = None) -> None:
        """``entry``, or a function that writes it on first use (with its ``shape``): a set no model reads in a run
        (the shared storage of a run of own views) is never decoded."""
        if isinstance(entry, StoredArrays):
            self._entry: StoredArrays | None = entry
            self._open = None
            self.shape = torch.Size(entry.shape("images"))
        else:
            self._entry, self._open = None, entry
            self.shape = torch.Size(shape)

    @property
    def entry(self) -> StoredArrays:
        if self._entry is None:
            self._entry = self._open()
        return self._entry

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        return (torch.from_numpy(rows) for rows in self.entry.batches("images", batch_size))

    def rows(self, indices: np.ndarray) -> torch.Tensor:
        """The images at ``indices``, read through a memory map of the entry: only their pages are read."""
        return torch.from_numpy(np.ascontiguousarray(self.entry.mapped("images")[np.asarray(indices, dtype=np.int64)]))


class ViewSource(Protocol):
    """Where the views of a set of image files come from (:class:`archsim.data.loaders.ImageFiles`)."""

    def identity(self) -> str: ...

    def seen_by(self, view: View, of: "ImageSet", store: CacheStore | None, limit: int | None) -> "ImageSet": ...


@dataclass(frozen=True)
class ImageSet:
    """Labelled images as uint8 ``[N, C, H, W]``.

    Models take ``images / 255`` and resize and normalise inside their own forward,
    so any model can consume any set, including adversarial sets made on another
    model. With ``views="own"`` each model first takes its own view of the set
    (:meth:`seen_by`): image files through its evaluation transform, arrays resized to
    its input size.
    """

    images: torch.Tensor | StoredImages
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    files: ViewSource | None = None
    """The image files the set was decoded from, which own views decode again (None: the set is its arrays)."""
    views: str = "shared"
    """One of :data:`VIEWS`."""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ArchsimError(
                f"data {self.name}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
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
        if isinstance(self.images, StoredImages):
            return str(self.images.entry.array("fingerprint"))
        h = fingerprint_start(self.images.shape)
        h.update(self.images.contiguous().numpy())
        return fingerprint_end(h, self.labels.numpy())

    @cached_property
    def key(self) -> str:
        """The data part of the cache keys of attacks and predictions: the :attr:`fingerprint` of a shared set; for own
        views, one key of the images (the files' bytes, or the arrays' pixels) and labels, which a model's fingerprint
        completes, since its preprocessing fixes its view."""
        if self.views == "shared":
            return self.fingerprint
        base = self.files.identity() if self.files is not None else self.fingerprint
        return digest("own views", base, hashlib.sha256(self.labels.numpy().astype(np.int64).tobytes()).hexdigest())

    def with_views(self, views: str) -> "ImageSet":
        """The same set, seen as ``views`` says (one of :data:`VIEWS`)."""
        if views not in VIEWS:
            raise ParameterError("views", f"must be one of {', '.join(VIEWS)}, got {views!r}")
        return dataclasses.replace(self, views=views)

    def seen_by(self, view: View | None, store: CacheStore | None = None, limit: int | None = None) -> "ImageSet":
        """The set as a model with ``view`` sees it (its first ``limit`` images only, in memory, if given).

        Shared sets, and models that state no view, see the set itself. Own views decode image files through the
        view, kept in ``store``; arrays are resized whole to the view's size (no crop: arrays are taken as the
        images a model sees) where their size differs.
        """
        if self.views == "shared" or view is None:
            return self if limit is None else self.subset(np.arange(min(limit, len(self))))
        if self.files is not None:
            return self.files.seen_by(view, self, store, limit)
        rows = self if limit is None else self.subset(np.arange(min(limit, len(self))))
        if tuple(rows.images.shape[-2:]) == tuple(view.size):
            return dataclasses.replace(rows, views="shared")
        if store is None or limit is not None:
            resized = np.concatenate([resize_rows(b.numpy(), view) for b in rows.batches(256)])
            return ImageSet(torch.from_numpy(resized), rows.labels, rows.classes, rows.name)
        shape = (len(rows), rows.images.shape[1], *view.size)
        key = digest("array view", rows.fingerprint, list(view.size), view.interpolation)  # arrays are never cropped
        entry = store.get_or_stream(
            "data",
            key,
            "images",
            shape,
            np.uint8,
            lambda: (resize_rows(b.numpy(), view) for b in rows.batches(256)),
            lambda: {"fingerprint": np.array(key)},
        )
        return ImageSet(StoredImages(entry), rows.labels, rows.classes, rows.name)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The images in consecutive batches of ``batch_size`` (the last may be shorter)."""
        return image_batches(self.images, batch_size)

    def subset(self, indices: np.ndarray) -> "ImageSet":
        """The images at ``indices``, in memory."""
        indices = np.asarray(indices)
        return ImageSet(
            image_rows(self.images, indices),
            self.labels[torch.as_tensor(indices, dtype=torch.long)],
            self.classes,
            self.name,
        )


def image_batches(images: torch.Tensor | StoredImages, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 ``images``, held in memory or in the cache, in consecutive batches of ``batch_size``
    (the last may be shorter): what a pass over a set larger than memory reads."""
    if isinstance(images, StoredImages):
        return images.batches(batch_size)
    return (images[start : start + batch_size] for start in range(0, len(images), batch_size))


def image_rows(images: torch.Tensor | StoredImages, indices: np.ndarray) -> torch.Tensor:
    """The uint8 ``images`` at ``indices``, in memory, whether the set is held in memory or in the cache."""
    if isinstance(images, StoredImages):
        return images.rows(indices)
    return images[torch.as_tensor(np.asarray(indices), dtype=torch.long)]


def fingerprint_start(shape: tuple[int, ...]) -> "hashlib._Hash":
    """The hash an image set's fingerprint builds on: feed it the pixels in order (any batches), then
    call :func:`fingerprint_end`. The same for a set in memory and one written batch by batch."""
    h = hashlib.sha256()
    h.update(str(tuple(shape)).encode())
    return h


def fingerprint_end(h: "hashlib._Hash", labels: np.ndarray) -> str:
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def stratified_indices(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of size ``n`` (all if None)."""
    labels = np.asarray(labels)
    if n is not None and n > len(labels):
        warnings.warn(
            f"--n-images {n} is more than the {len(labels)} images there are; all of them are used", stacklevel=2
        )
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    if n <= 0:
        raise ParameterError("n_images", f"must be positive, got {n}")
    n_classes = len(np.unique(labels))
    if n < n_classes:
        raise ParameterError(
            "n_images", f"{n} is smaller than the {n_classes} classes present; ask for at least {n_classes}"
        )
    try:
        chosen, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    except ValueError:
        # scikit-learn will not split a class of a single image; the draw keeps every class all the same.
        chosen = _every_class_drawn(labels, n, seed)
    return np.sort(chosen)


def _every_class_drawn(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices drawn per class in proportion to its size, each class at least once (``n`` >= the classes)."""
    classes, counts = np.unique(labels, return_counts=True)
    share = n * counts / len(labels)
    quota = np.minimum(counts, np.maximum(1, np.floor(share).astype(int)))
    while quota.sum() < n:  # the largest remainders first, among classes with images left
        room = np.where(quota < counts, share - quota, -np.inf)
        quota[int(np.argmax(room))] += 1
    while quota.sum() > n:  # classes raised to one image took places from the largest
        quota[int(np.argmax(np.where(quota > 1, quota - share, -np.inf)))] -= 1
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota, strict=True)]
    )
