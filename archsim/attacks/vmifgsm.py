"""Variance-tuned momentum iterative FGSM (Wang & He, CVPR 2021)."""

from __future__ import annotations

from typing import Any

import torch

from archsim.attacks.base import (
    Attack,
    NoiseSource,
    check_count,
    check_positive,
    check_steps,
    project,
)
from archsim.attacks.mifgsm import l1_normalised


class VMIFGSM(Attack):
    """MI-FGSM whose gradient is corrected by the previous step's gradient variance.

    The variance term is the mean gradient at ``samples`` points drawn uniformly
    within ``beta * eps`` of the current iterate, minus the gradient there. Draws
    are seeded per image (batch-size invariant), so the attack is reproducible.

    Parameters
    ----------
    eps : float
        Ball radius in [0, 1] pixel units.
    steps : int
        Iterations (paper: 10).
    rel_step : float, optional
        Step as a fraction of ``eps``; default ``1 / steps``.
    decay : float
        Momentum decay (paper: 1.0).
    samples : int
        Neighbours per step, N (paper: 20; torchattacks: 5).
    beta : float
        Neighbourhood radius in units of ``eps`` (paper: 1.5).
    """

    name = "vmifgsm"

    def __init__(
        self,
        eps: float,
        steps: int = 10,
        rel_step: float | None = None,
        decay: float = 1.0,
        samples: int = 20,
        beta: float = 1.5,
    ) -> None:
        super().__init__(eps)
        self.steps = check_steps(steps)
        self.rel_step = check_positive("rel_step", rel_step if rel_step is not None else 1.0 / self.steps, 1.0)
        self.decay = check_positive("decay", decay) if decay != 0 else 0.0
        self.samples = check_count("samples", samples)
        self.beta = check_positive("beta", beta)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "steps": self.steps,
            "rel_step": self.rel_step,
            "decay": self.decay,
            "samples": self.samples,
            "beta": self.beta,
        }

    @property
    def uses_noise(self) -> bool:
        return True

    def perturb(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource | None
    ) -> torch.Tensor:
        alpha = self.rel_step * self.eps
        adv, momentum, variance = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
        for step in range(self.steps):
            _, grad, _ = self.input_gradient(model, adv, y)
            momentum = self.decay * momentum + l1_normalised(grad + variance)
            neighbours = torch.zeros_like(x)
            for sample in range(self.samples):
                # Neighbours are not clipped to [0, 1]: the gradient is only probed there.
                _, g, _ = self.input_gradient(model, adv + self.beta * self.eps * noise.draw(step, sample), y)
                neighbours += g
            variance = neighbours / self.samples - grad
            adv = project(adv + alpha * momentum.sign(), x, self.eps)
        return adv
