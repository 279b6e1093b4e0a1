"""PGD restricted to low spatial frequencies (Guo et al., 2018; Sharma et al., 2019)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft
import torch

from archsim.attacks.base import Attack, NoiseSource, check_positive, check_steps, project


def lowpass_matrix(size: int, keep: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """P = D^T M D for the orthonormal DCT-II D and M keeping the first ``keep`` coefficients.

    Applying P on both image axes (P X P^T) zeroes every 2-D DCT coefficient outside
    the low-frequency ``keep x keep`` block; P is a symmetric projection.
    """
    dct = scipy.fft.dct(np.eye(size), norm="ortho", axis=0)  # rows: basis functions
    projection = dct[:keep].T @ dct[:keep]
    return torch.as_tensor(projection, device=device, dtype=dtype)


class LowFrequencyPGD(Attack):
    """L-infinity PGD whose perturbation lives in the lowest ``ratio`` of DCT frequencies.

    After each signed step the perturbation is projected onto the low-frequency
    block (per channel, on the canonical image grid), then clipped to the ball.

    Parameters
    ----------
    eps : float
        Ball radius in [0, 1] pixel units.
    steps, rel_step, random_start
        As :class:`~archsim.attacks.PGD`.
    ratio : float
        Share of frequencies kept per image axis (Sharma et al.: 1/4 of 224 px).
    """

    name = "lowfreq-pgd"

    def __init__(self, eps: float, steps: int = 50, rel_step: float = 0.1, random_start: bool = True, ratio: float = 0.25) -> None:
        super().__init__(eps)
        self.steps = check_steps(steps)
        self.rel_step = check_positive("--rel-step", rel_step, 1.0)
        self.random_start = bool(random_start)
        self.ratio = check_positive("ratio", ratio, 1.0)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "steps": self.steps, "rel_step": self.rel_step, "random_start": self.random_start, "ratio": self.ratio}

    @property
    def uses_noise(self) -> bool:
        return self.random_start

    def lowpass(self, delta: torch.Tensor) -> torch.Tensor:
        h, w = delta.shape[-2:]
        rows = lowpass_matrix(h, max(1, math.ceil(self.ratio * h)), delta.device, delta.dtype)
        cols = lowpass_matrix(w, max(1, math.ceil(self.ratio * w)), delta.device, delta.dtype)
        return rows @ delta @ cols

    def perturb(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource | None) -> torch.Tensor:
        alpha = self.rel_step * self.eps
        delta = self.lowpass(self.eps * noise.draw()).clamp(-self.eps, self.eps) if self.random_start else torch.zeros_like(x)
        adv = (x + delta).clamp(0, 1)
        for _ in range(self.steps):
            _, grad, _ = self.input_gradient(model, adv, y)
            delta = self.lowpass(adv - x + alpha * grad.sign())
            adv = project(x + delta, x, self.eps)
        return adv
