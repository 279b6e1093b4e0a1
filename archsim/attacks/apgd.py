"""Auto-PGD with cross-entropy loss (Croce & Hein, ICML 2020), AutoAttack's APGD-CE, L-infinity."""

from __future__ import annotations

import math
from typing import Any

import torch

from archsim.attacks.base import Attack, NoiseSource, check_positive, check_steps, project


def checkpoints(steps: int) -> list[int]:
    """Iterations where the step size is reconsidered: ceil(p_j * steps), p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # round() first: 0.57 * 100 is 57.000000001 in floating point, and the paper means 57.
    marks = {math.ceil(round(v * steps, 9)) for v in p[1:]}
    return sorted(m for m in marks if m <= steps)


class APGD(Attack):
    """Step-size-free PGD: momentum 0.75, step 2 eps halved at checkpoints where the loss
    stalled, restarts from the best point; returns each image's highest-loss iterate.

    At checkpoint w_j the step is halved (and the iterate reset to the best point)
    where fewer than ``rho`` of the steps since w_{j-1} raised the loss, or where
    the step was not halved at w_{j-1} and the best loss has not improved since.

    Parameters
    ----------
    eps : float
        Ball radius in [0, 1] pixel units.
    steps : int
        Iterations (AutoAttack: 100).
    rho : float
        Share of loss-raising steps below which the step is halved (paper: 0.75).
    random_start : bool
        Start from a random point of the ball (as AutoAttack) or from the image.
    """

    name = "apgd-ce"

    def __init__(self, eps: float, steps: int = 100, rho: float = 0.75, random_start: bool = True) -> None:
        super().__init__(eps)
        self.steps = check_steps(steps)
        self.rho = check_positive("rho", rho, 1.0)
        self.random_start = bool(random_start)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "steps": self.steps, "rho": self.rho, "random_start": self.random_start}

    @property
    def uses_noise(self) -> bool:
        return self.random_start

    def perturb(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource | None) -> torch.Tensor:
        view = (-1,) + (1,) * (x.dim() - 1)
        if self.random_start:
            t = noise.draw()
            # AutoAttack's start: a random direction scaled so its largest entry reaches eps.
            t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(view)
            adv = (x + self.eps * t).clamp(0, 1)
        else:
            adv = x.clone()
        loss, grad, _ = self.input_gradient(model, adv, y)
        best, best_loss, best_grad = adv.clone(), loss.clone(), grad.clone()
        step = torch.full((len(x),), 2.0 * self.eps, device=x.device)
        previous = adv.clone()
        increases = torch.zeros(len(x), device=x.device)
        checks = checkpoints(self.steps)
        last_check, best_at_last_check = 0, best_loss.clone()
        halved_at_last_check = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for i in range(self.steps):
            momentum = 0.75 if i > 0 else 1.0
            z = project(adv + step.view(view) * grad.sign(), x, self.eps)
            new = project(adv + momentum * (z - adv) + (1 - momentum) * (adv - previous), x, self.eps)
            previous, adv = adv, new
            new_loss, grad, _ = self.input_gradient(model, adv, y)
            increases += (new_loss > loss).float()
            loss = new_loss
            improved = loss > best_loss
            best[improved], best_loss[improved], best_grad[improved] = adv[improved], loss[improved], grad[improved]
            if i + 1 in checks:
                span = i + 1 - last_check
                stalled = increases < self.rho * span
                no_progress = ~halved_at_last_check & (best_at_last_check >= best_loss)
                halve = stalled | no_progress
                step[halve] /= 2
                # Restart halved images from their best point; momentum restarts with them.
                adv[halve], grad[halve], previous[halve], loss[halve] = best[halve], best_grad[halve], best[halve], best_loss[halve]
                halved_at_last_check, best_at_last_check = halve, best_loss.clone()
                increases.zero_()
                last_check = i + 1
        return best
