"""The attack base class: one call shape for every attack.

Attacks run in canonical pixel space: they take uint8 images, work on
``images / 255`` through the model's own differentiable preprocessing, and
return uint8 images rounded to the grid and kept inside the L-infinity ball of
radius ``eps`` and inside [0, 255].
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from archsim.errors import ArchsimError


class Attack(ABC):
    """An untargeted L-infinity attack.

    Parameters
    ----------
    eps : float
        Radius of the L-infinity ball in [0, 1] pixel units.
    """

    name: str = ""

    def __init__(self, eps: float) -> None:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 < eps <= 1):
            raise ArchsimError(f"--eps must lie in (0, 1] (pixel units, e.g. 0.1 or 4/255=0.0157), got {eps}")
        self.eps = float(eps)

    def config(self) -> dict[str, Any]:
        """Every setting that changes the result; enters cache keys and config.json."""
        return {"name": self.name, "eps": self.eps}

    @abstractmethod
    def perturb(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Float adversarial images in [0, 1] for float images ``x`` and labels ``y``.

        ``noise`` holds uniform [-1, 1) draws of ``x``'s shape for random starts.
        """

    @property
    def uses_noise(self) -> bool:
        return False

    def __call__(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        seed: int = 0,
        batch_size: int = 128,
        desc: str | None = None,
    ) -> torch.Tensor:
        """Adversarial uint8 images for uint8 ``images`` [N, C, H, W]."""
        device = next((b.device for b in model.buffers()), torch.device("cpu"))
        out = torch.empty_like(images)
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=desc or f"attack {self.name}", unit="batch", leave=False, disable=None):
            stop = min(start + batch_size, len(images))
            clean = images[start:stop].to(device)
            noise = start_noise(seed, range(start, stop), clean.shape[1:]).to(device) if self.uses_noise else None
            # clone(): labels made under inference_mode cannot enter autograd otherwise.
            adv = self.perturb(model, clean.float() / 255.0, labels[start:stop].to(device).clone(), noise)
            out[start:stop] = to_uint8(adv, clean, self.eps).cpu()
        return out


def start_noise(seed: int, indices: range, shape: torch.Size) -> torch.Tensor:
    """Uniform [-1, 1) noise drawn per image from (seed, image index).

    Per-image streams keep the result independent of the batch size.
    """
    draws = [np.random.default_rng([seed, i]).random(tuple(shape), dtype=np.float32) for i in indices]
    return torch.from_numpy(np.stack(draws)) * 2 - 1


def to_uint8(adv: torch.Tensor, clean: torch.Tensor, eps: float) -> torch.Tensor:
    """Round float images to the uint8 grid and project onto the integer eps-ball."""
    radius = math.floor(eps * 255 + 1e-6)
    rounded = torch.round(adv.detach() * 255)
    low = (clean.to(torch.int16) - radius).clamp(min=0)
    high = (clean.to(torch.int16) + radius).clamp(max=255)
    return torch.minimum(torch.maximum(rounded, low), high).to(torch.uint8)
