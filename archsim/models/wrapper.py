"""The one wrapped model type every stage consumes."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any, Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from archsim.data.views import CROP_MODES, INTERPOLATIONS, View

_TENSOR_INTERPOLATIONS = {
    "bilinear": TF.InterpolationMode.BILINEAR,
    "bicubic": TF.InterpolationMode.BICUBIC,
    "nearest": TF.InterpolationMode.NEAREST,
}
"""What a differentiable resize of a tensor offers; a view's other Pillow filters resize tensors bicubically."""
_LUMA = (0.299, 0.587, 0.114)


class Preprocess(nn.Module):
    """[0, 1] images -> the network's input: channels, size, normalisation; and the view it takes of image files.

    Differentiable, so attacks run through it. An image already at ``input_size`` (the
    model's own view) is only normalised; another (a source's adversarial image made
    at its own size, a shared pixel space) is resized to it first.

    Parameters
    ----------
    input_size : (C, H, W) or None
        None: the network takes any size.
    mean, std : sequence of float
        One value, or one per channel.
    interpolation : str
        Of the resize, in the view and in the forward.
    resize : (int, int) or None
        The size an image file is resized to before the centre crop to ``input_size``
        (timm: ``floor(side / crop_pct)``, see :func:`archsim.data.views.timm_scale_size`);
        None: the file is resized to ``input_size`` whole.
    crop_mode : {"center", "squash", "border"}
        timm's crop mode.
    """

    def __init__(
        self,
        input_size: Sequence[int] | None,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
        resize: Sequence[int] | None = None,
        crop_mode: str = "center",
    ) -> None:
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {interpolation!r} not one of {', '.join(INTERPOLATIONS)}")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop mode {crop_mode!r} not one of {', '.join(CROP_MODES)}")
        self.input_size = tuple(int(v) for v in input_size) if input_size is not None else None
        self.interpolation = interpolation
        self.resize = tuple(int(v) for v in resize) if resize is not None else None
        if self.resize is not None and (len(self.resize) != 2 or self.input_size is None):
            raise ValueError("resize needs an input size and two sides (height, width)")
        self.crop_mode = crop_mode
        # A single mean or std serves every channel: the other, or the input size, says how many there are.
        channels = self.input_size[0] if self.input_size else max(len(mean), len(std))
        self.register_buffer("mean", _per_channel(mean, channels))
        self.register_buffer("std", _per_channel(std, channels))

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            if self.channels == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            elif self.channels == 1 and x.shape[1] == 3:
                x = (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise ValueError(f"cannot feed {x.shape[1]}-channel images to a {self.channels}-channel model")
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size[1:]:
            mode = _TENSOR_INTERPOLATIONS.get(self.interpolation, TF.InterpolationMode.BICUBIC)
            x = TF.resize(x, list(self.input_size[1:]), interpolation=mode, antialias=True)
        return (x - self.mean) / self.std

    @property
    def view(self) -> View | None:
        """The view this model takes of an image file (None: it takes any size, and sees a set as stored)."""
        if self.input_size is None:
            return None
        fill = tuple(round(255 * float(v)) for v in self.mean.flatten())
        fill = fill * 3 if len(fill) == 1 else fill
        return View(tuple(self.input_size[1:]), self.resize, self.crop_mode, self.interpolation, fill)

    def describe(self) -> dict[str, Any]:
        described = {
            "input_size": list(self.input_size) if self.input_size else None,
            "mean": [round(float(v), 6) for v in self.mean.flatten()],
            "std": [round(float(v), 6) for v in self.std.flatten()],
            "interpolation": self.interpolation,
        }
        # Only where set: the fingerprints of models that state no crop stay those of earlier runs.
        if self.resize is not None:
            described["resize"] = list(self.resize)
        if self.crop_mode != "center":
            described["crop_mode"] = self.crop_mode
        return described


def _per_channel(values: Sequence[float], channels: int) -> torch.Tensor:
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{len(values)} normalisation values for {channels} channels")
    return torch.tensor(values).view(1, channels, 1, 1)


class SimModel(nn.Module):
    """A frozen classifier that takes canonical [0, 1] images of any size.

    Parameters
    ----------
    net : nn.Module
        The network proper (timm, torchvision or any module), taking normalised input.
    preprocess : Preprocess
        Resizing and normalisation applied inside :meth:`forward`.
    name : str
        Display name, unique within a run.
    spec : str
        The spec the model was created from.
    info : dict, optional
        Facts about the model (family, training accuracy...) carried into reports.
    """

    def __init__(self, net: nn.Module, preprocess: Preprocess, name: str, spec: str, info: dict | None = None) -> None:
        super().__init__()
        self.net = net
        self.preprocess = preprocess
        self.name = name
        self.spec = spec
        self.info = dict(info or {})
        self.channels_last = False
        """Feed the network NHWC tensors (set by :func:`archsim.models.fastpath.prepare`, see there when)."""
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "SimModel":
        # Frozen by design: batch-norm statistics and dropout must never change under attack.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    @property
    def device(self) -> torch.device:
        return self.preprocess.mean.device

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the architecture, the weights and the preprocessing (:func:`network_fingerprint`)."""
        return network_fingerprint(self.net, self.preprocess).hexdigest()

    @cached_property
    def architecture_id(self) -> str:
        """Short hash of the module tree and input size: equal for the same architecture, whatever the weights."""
        h = hashlib.sha256(repr(self.net).encode())
        h.update(repr(self.preprocess.input_size).encode())
        return h.hexdigest()[:12]

    @cached_property
    def num_outputs(self) -> int:
        """Width of the output, found by one forward pass."""
        size = self.preprocess.input_size or (self.preprocess.channels, 32, 32)
        with torch.inference_mode():
            out = self(torch.zeros((1, *size), device=self.device))
        return int(out.shape[-1])


def network_fingerprint(net: nn.Module, preprocess: Preprocess) -> "hashlib._Hash":
    """The SHA-256 of a network's module tree (its ``repr``), its preprocessing and its ``state_dict`` (names, dtypes,
    shapes and bytes of every parameter and persistent buffer): the model part of every cache key."""
    h = hashlib.sha256()
    h.update(repr(net).encode())
    h.update(repr(sorted(preprocess.describe().items())).encode())
    for key, tensor in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h
