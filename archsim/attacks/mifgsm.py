"""Momentum iterative FGSM (Dong et al., CVPR 2018)."""

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


def l1_normalised(grad: torch.Tensor) -> torch.Tensor:
    """Each image's gradient divided by its mean absolute value (the paper's L1 normalisation)."""
    return grad / grad.abs().mean(dim=tuple(range(1, grad.dim())), keepdim=True)


class MIFGSM(Attack):
    """Iterative sign steps on an accumulated, L1-normalised gradient; deterministic.

    Parameters
    ----------
    eps : float
        Ball radius in [0, 1] pixel units.
    steps : int
        Iterations (paper: 10).
    rel_step : float, optional
        Step as a fraction of ``eps``; default ``1 / steps`` (the paper's eps / T).
    decay : float
        Momentum decay factor mu (paper: 1.0).
    """

    name = "mifgsm"

    def __init__(self, eps: float, steps: int = 10, rel_step: float | None = None, decay: float = 1.0) -> None:
        super().__init__(eps)
        self.steps = check_steps(steps)
        self.rel_step = check_positive("rel_step", rel_step if rel_step is not None else 1.0 / self.steps, 1.0)
        self.decay = check_positive("decay", decay) if decay != 0 else 0.0

    def config(self) -> dict[str, Any]:
        return {**super().config(), "steps": self.steps, "rel_step": self.rel_step, "decay": self.decay}

    def perturb(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource | None
    ) -> torch.Tensor:
        alpha = self.rel_step * self.eps
        adv, momentum = x.clone(), torch.zeros_like(x)
        for _ in range(self.steps):
            _, grad, _ = self.input_gradient(model, adv, y)
            momentum = self.decay * momentum + l1_normalised(grad)
            adv = project(adv + alpha * momentum.sign(), x, self.eps)
        return adv
