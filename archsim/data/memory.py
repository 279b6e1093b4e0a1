"""Image sets given as Python objects: ``(images, labels[, classes])`` tensors or arrays, or a torch ``Dataset``.

:func:`memory_spec` turns such a set into uint8 ``[N, C, H, W]`` images, writes it
into the cache under its content (pixels, labels, classes) and returns the spec
``memory:KEY`` that reads it back from there. A run records that spec like any
other, so later commands (``archsim add``, ``measures``, ``report``) find the set in
the cache without the Python object; the adversarial sets are keyed by the same
pixel fingerprint as the same images read from an npz file or a folder.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2.functional as TF
from tqdm.auto import tqdm

from archsim.cache import CacheStore, digest
from archsim.data.imageset import ImageSet, StoredImages, stratified_indices
from archsim.data.loaders import check_labels, register_loader, to_nchw
from archsim.errors import ArchsimError, ParameterError
from archsim.specs import Spec

SCHEME = "memory"


def memory_spec(data: Any, store: CacheStore) -> str:
    """Store an image set given in Python in ``store`` and return the spec that names it.

    Parameters
    ----------
    data : tuple or Dataset
        ``(images, labels)`` or ``(images, labels, classes)``: images as a tensor or
        array, ``[N, C, H, W]``, ``[N, H, W, C]`` (C of 1 or 3) or ``[N, H, W]``, either
        uint8 (0..255) or floating point in [0, 1] (rounded to the 255 levels every
        attack works on); labels as whole class indices; classes as their number or
        their names (default: the largest label + 1). Or a torch ``Dataset`` of
        ``(image, label)`` items (tensors, arrays or PIL images, all of one size), whose
        ``classes`` attribute, if any, names the classes.
    store : CacheStore
        Where the set is kept.

    Returns
    -------
    str
        ``memory:KEY``, a data spec.
    """
    images, labels, classes = _from_dataset(data) if _is_dataset(data) else _from_tuple(data)
    in_memory = ImageSet(images, torch.from_numpy(labels), classes, SCHEME)
    key = digest("memory", in_memory.fingerprint, list(classes))
    store.get_or_compute(
        "data",
        digest("data", SCHEME, key),
        lambda: {
            "images": images.numpy(),
            "labels": labels,
            "fingerprint": np.array(in_memory.fingerprint),
            "classes": np.array(classes),
        },
    )
    return f"{SCHEME}:{key}"


def _is_dataset(data: Any) -> bool:
    return isinstance(data, torch.utils.data.Dataset) or (
        not isinstance(data, (tuple, list)) and hasattr(data, "__getitem__") and hasattr(data, "__len__")
    )


def _from_tuple(data: Any) -> tuple[torch.Tensor, np.ndarray, tuple[str, ...]]:
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ParameterError(
            "data", f"got a {type(data).__name__}; give a spec string, (images, labels[, classes]) or a torch Dataset"
        )
    images, labels = _canonical(data[0]), _labels(data[1])
    if len(images) != len(labels):
        raise ParameterError("data", f"holds {len(images)} images but {len(labels)} labels")
    return images, labels, _classes(data[2] if len(data) == 3 else None, labels)


def _from_dataset(dataset: Any) -> tuple[torch.Tensor, np.ndarray, tuple[str, ...]]:
    if not len(dataset):
        raise ParameterError("data", "the Dataset holds no items")
    rows: list[torch.Tensor] = []
    labels: list[int] = []
    for i in tqdm(range(len(dataset)), desc="read dataset", unit="img", leave=False, disable=None):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ParameterError("data", f"item {i} of the Dataset is not an (image, label) pair")
        image = item[0]
        if isinstance(image, PIL.Image.Image):
            image = TF.pil_to_tensor(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
        rows.append(_canonical(torch.as_tensor(np.asarray(image)) if not torch.is_tensor(image) else image, one=True))
        if rows[-1].shape != rows[0].shape:
            raise ParameterError(
                "data",
                f"item {i} of the Dataset is {tuple(rows[-1].shape)}, item 0 {tuple(rows[0].shape)}; give images of "
                "one size (resize them in the Dataset's transform)",
            )
        labels.append(int(item[1]))
    label_array = _labels(np.array(labels))
    return torch.stack(rows), label_array, _classes(getattr(dataset, "classes", None), label_array)


def _canonical(images: Any, one: bool = False) -> torch.Tensor:
    """uint8 [N, C, H, W] (or [C, H, W] with ``one``) from a tensor or array in any of the accepted layouts."""
    what = "an image of the Dataset" if one else "images"
    try:
        tensor = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ParameterError("data", f"{what}: a {type(images).__name__} is not a tensor or array") from None
    if one:
        tensor = tensor[None]
    if tensor.is_floating_point():
        tensor = tensor.float()  # numpy has no bfloat16; pixels are rounded from float32 below in any case
    try:  # the layouts of npz files: [N, H, W], [N, C, H, W] or [N, H, W, C]
        tensor = torch.from_numpy(to_nchw(tuple(tensor.shape), "{}")(tensor.numpy()))
    except ArchsimError as error:
        raise ParameterError("data", str(error).replace("{}: ", "the Dataset's " if one else "", 1)) from None
    if tensor.dtype == torch.uint8:
        out = tensor
    elif tensor.is_floating_point():
        if not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
            raise ParameterError(
                "data", f"{what} are floating point outside [0, 1]; give pixels in [0, 1] (before normalising)"
            )
        out = (tensor * 255).round().to(torch.uint8)
    else:
        raise ParameterError("data", f"{what} are {tensor.dtype}; give uint8 0..255 or floats in [0, 1]")
    out = out.contiguous()
    return out[0] if one else out


def _labels(labels: Any) -> np.ndarray:
    array = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    try:
        return check_labels(array.reshape(-1), "{}")
    except ArchsimError as error:
        raise ParameterError("data", str(error)) from None


def _classes(classes: int | Sequence[str] | None, labels: np.ndarray) -> tuple[str, ...]:
    if classes is None:
        return tuple(str(i) for i in range(int(labels.max()) + 1))
    names = tuple(str(i) for i in range(classes)) if isinstance(classes, int) else tuple(str(c) for c in classes)
    if labels.max() >= len(names):
        raise ParameterError("data", f"a label is {int(labels.max())}, but there are {len(names)} classes")
    return names


def _memory(spec: Spec, split: str, n_images: int | None, seed: int, store: CacheStore | None) -> ImageSet:
    """``memory:KEY``: a set :func:`memory_spec` stored in the cache."""
    entry = store.open("data", digest("data", SCHEME, spec.target)) if store is not None else None
    if entry is None:
        raise ArchsimError(
            f"data {spec.text[:19]}... is an image set given in Python that the cache "
            f"{store.root if store else '(none)'} does not hold; pass the images again, e.g. run_sat(data=(images, "
            "labels), ...)"
        )
    labels = entry.array("labels")
    classes = tuple(str(c) for c in entry.array("classes"))
    whole = ImageSet(StoredImages(entry), torch.from_numpy(labels), classes, spec.text)
    chosen = stratified_indices(labels, n_images, seed)
    return whole if len(chosen) == len(labels) else whole.subset(chosen)


register_loader(SCHEME, _memory)
