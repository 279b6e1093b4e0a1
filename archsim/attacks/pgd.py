"""Projected gradient descent (Madry et al.), the SAT paper's attack."""

from __future__ import annotations

from typing import Any

import torch

from archsim.attacks.base import (
    Attack,
    NoiseSource,
    check_positive,
    check_steps,
    project,
)


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
        self.steps = check_steps(steps)
        self.rel_step = check_positive("rel_step", rel_step, 1.0)
        self.random_start = bool(random_start)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "steps": self.steps, "rel_step": self.rel_step, "random_start": self.random_start}

    @property
    def uses_noise(self) -> bool:
        return self.random_start

    def perturb(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource | None
    ) -> torch.Tensor:
        alpha = self.rel_step * self.eps
        adv = x.clone()
        if self.random_start:
            adv = (adv + self.eps * noise.draw()).clamp(0, 1)
        for _ in range(self.steps):
            _, grad, _ = self.input_gradient(model, adv, y)
            adv = project(adv + alpha * grad.sign(), x, self.eps)
        return adv
