"""Projected gradient descent (Madry et al.), the SAT paper's attack."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from archsim.attacks.base import Attack
from archsim.errors import ArchsimError


class PGD(Attack):
    """L-infinity PGD with sign steps on cross-entropy.

    Parameters
    ----------
    eps : float
        Ball radius in [0, 1] pixel units.
    steps : int
        Iterations (paper: 50).
    rel_step : float
        Step size as a fraction of ``eps`` (paper: "learning rate 0.1").
    random_start : bool
        Start from a uniform point in the ball.
    """

    name = "pgd"

    def __init__(self, eps: float, steps: int = 50, rel_step: float = 0.1, random_start: bool = True) -> None:
        super().__init__(eps)
        if not isinstance(steps, int) or steps <= 0:
            raise ArchsimError(f"--steps must be a positive whole number, got {steps}")
        if not 0 < rel_step <= 1:
            raise ArchsimError(f"--rel-step must lie in (0, 1], got {rel_step}")
        self.steps = steps
        self.rel_step = float(rel_step)
        self.random_start = bool(random_start)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "steps": self.steps, "rel_step": self.rel_step, "random_start": self.random_start}

    @property
    def uses_noise(self) -> bool:
        return self.random_start

    def perturb(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        alpha = self.rel_step * self.eps
        adv = x.clone()
        if self.random_start:
            adv = (adv + self.eps * noise).clamp(0, 1)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            # Summed loss: each image's gradient is independent of the batch size.
            loss = F.cross_entropy(model(adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + alpha * grad.sign()
            adv = (x + (adv - x).clamp(-self.eps, self.eps)).clamp(0, 1)
        return adv
