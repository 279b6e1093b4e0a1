"""What a model's evaluation transform makes of an image: its view.

A model's view is the geometry of its library's evaluation transform: the input size, the size the image is first
resized to (timm: ``floor(size / crop_pct)``; torchvision: the weights' ``resize_size``), the crop mode and the
interpolation. Applied to an image file it repeats, step for step, what ``timm.data.create_transform`` (or the
torchvision weights' ``transforms()``) does before ``ToTensor``: Pillow decodes the file and converts it to RGB, as
timm's image dataset does, and torchvision's functional resize and crop run on the Pillow image, so the pixels are
Pillow's, as they are in timm's own evaluation. Only the normalisation is left to the model's forward, where the attack
differentiates through it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2.functional as TF

CROP_MODES = ("center", "squash", "border")
"""timm's crop modes: ``center`` keeps the aspect ratio and crops, ``squash`` resizes each side apart and crops,
``border`` fits the longer side and pads."""

INTERPOLATIONS = {
    "nearest": TF.InterpolationMode.NEAREST,
    "bilinear": TF.InterpolationMode.BILINEAR,
    "bicubic": TF.InterpolationMode.BICUBIC,
    "box": TF.InterpolationMode.BOX,
    "hamming": TF.InterpolationMode.HAMMING,
    "lanczos": TF.InterpolationMode.LANCZOS,
}


@dataclass(frozen=True)
class View:
    """The geometry of one evaluation transform.

    Parameters
    ----------
    size : (int, int)
        Height and width the model takes.
    resize : (int, int) or None
        The size the image is resized to before the crop (``center``: the shorter side's target where both are
        equal); None: the image is resized to ``size`` whole, with no crop (a model that states no crop).
    crop_mode : {"center", "squash", "border"}
    interpolation : str
        One of :data:`INTERPOLATIONS`.
    fill : tuple of int
        Padding colour of ``border`` mode (timm: the mean in 0..255).
    """

    size: tuple[int, int]
    resize: tuple[int, int] | None = None
    crop_mode: str = "center"
    interpolation: str = "bicubic"
    fill: tuple[int, ...] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop mode {self.crop_mode!r} not one of {', '.join(CROP_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} not one of {', '.join(INTERPOLATIONS)}")

    def describe(self) -> dict[str, Any]:
        """The view as plain values (a cache key part, a column of models.csv)."""
        return {
            "size": list(self.size),
            "resize": list(self.resize) if self.resize else None,
            "crop_mode": self.crop_mode,
            "interpolation": self.interpolation,
            "fill": list(self.fill),
        }

    def label(self) -> str:
        """Short, e.g. ``224/256 center bicubic``."""
        resize = f"/{self.resize[0]}" if self.resize and self.resize[0] == self.resize[1] else ""
        resize = resize or (f"/{self.resize[0]}x{self.resize[1]}" if self.resize else " whole")
        return f"{self.size[0]}{'' if self.size[0] == self.size[1] else 'x' + str(self.size[1])}{resize} " + (
            f"{self.crop_mode} {self.interpolation}"
        )


def timm_scale_size(size: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """The size timm's evaluation transform resizes to before its crop: ``floor(side / crop_pct)`` per side (floored,
    not rounded: 288 / 0.9 is 319.99... in floating point, and timm resizes to 319)."""
    return tuple(math.floor(side / crop_pct) for side in size)  # type: ignore[return-value]


def decode_rgb(data: bytes) -> PIL.Image.Image:
    """An image file's bytes as a Pillow RGB image, as timm's image dataset opens files (``convert('RGB')``)."""
    with PIL.Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def apply_view(image: PIL.Image.Image, view: View) -> torch.Tensor:
    """``image`` through ``view``'s resize and crop, as uint8 ``[C, H, W]``."""
    mode = INTERPOLATIONS[view.interpolation]
    if view.resize is None:
        return TF.pil_to_tensor(TF.resize(image, list(view.size), interpolation=mode))
    if view.crop_mode == "squash":
        image = TF.resize(image, list(view.resize), interpolation=mode)
    elif view.crop_mode == "border":
        image = TF.resize(image, _keep_ratio(image, view.resize, longest=True), interpolation=mode)
        image = _pad_to(image, view.size, view.fill)
    elif view.resize[0] == view.resize[1]:
        # torchvision's Resize with one number, as timm calls it: the shorter side to it, the longer in proportion.
        image = TF.resize(image, [view.resize[0]], interpolation=mode)
    else:
        image = TF.resize(image, _keep_ratio(image, view.resize, longest=False), interpolation=mode)
    return TF.pil_to_tensor(TF.center_crop(image, list(view.size)))


def _keep_ratio(image: PIL.Image.Image, target: tuple[int, int], longest: bool) -> list[int]:
    """The size that keeps ``image``'s aspect ratio and fits ``target`` by its longer (or shorter) side, rounded as
    timm's ``ResizeKeepRatio`` rounds it."""
    height, width = image.height, image.width
    ratios = (height / target[0], width / target[1])
    ratio = max(ratios) if longest else min(ratios)
    return [round(height / ratio), round(width / ratio)]


def _pad_to(image: PIL.Image.Image, size: tuple[int, int], fill: tuple[int, ...]) -> PIL.Image.Image:
    """Pad ``image`` evenly (the extra pixel right and below) to at least ``size`` with ``fill``."""
    height, width = image.height, image.width
    if height >= size[0] and width >= size[1]:
        return image
    left, top = max(size[1] - width, 0) // 2, max(size[0] - height, 0) // 2
    right, bottom = max(size[1] - width + 1, 0) // 2, max(size[0] - height + 1, 0) // 2
    return TF.pad(image, [left, top, right, bottom], fill=list(fill))


def resize_rows(rows: np.ndarray, view: View) -> np.ndarray:
    """uint8 images ``[n, C, H, W]`` held as arrays, resized whole to ``view.size`` (no crop: arrays are taken as the
    images a model sees, see :meth:`archsim.data.ImageSet.seen_by`), through Pillow like files."""
    out = np.empty((len(rows), rows.shape[1], *view.size), dtype=np.uint8)
    mode = INTERPOLATIONS[view.interpolation]
    for i, row in enumerate(rows):
        image = PIL.Image.fromarray(row[0] if row.shape[0] == 1 else row.transpose(1, 2, 0))
        resized = np.asarray(TF.resize(image, list(view.size), interpolation=mode))
        out[i] = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    return out
