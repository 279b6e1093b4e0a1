"""Auto-PGD with cross-entropy loss (Croce & Hein, ICML 2020), AutoAttack's APGD-CE, L-infinity."""

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


def checkpoints(steps: int) -> list[int]:
    """Iterations (1-based) after which the step size is reconsidered, as AutoAttack computes them:
    a first period of int(0.22 steps), each next one int(0.03 steps) shorter, none shorter than
    int(0.06 steps) (each at least 1). For 100 steps: the paper's 22, 41, 57, 70, 80, 87, 93, 99."""
    period, shortest, decrease = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    marks, at = [], period
    while at <= steps:
        marks.append(at)
        period = max(period - decrease, shortest)
        at += period
    return marks


class APGD(Attack):
    """Step-size-free PGD as AutoAttack's APGD-CE (one restart): momentum 0.75, step 2 eps halved at
    checkpoints where the loss stalled, restarts from the best point.

    At checkpoint w_j, with k the iterations since w_{j-1}, the step is halved and the
    iterate reset to the highest-loss point where at most ``rho`` k of the last k steps
    raised the loss, or where the step was not halved at w_{j-1} and the best loss has not
    improved since. The momentum's previous iterate is kept across such a reset, as in the
    reference. Returned per image, as AutoAttack's ``x_best_adv``: the latest iterate
    (the random start included) that the model misclassifies; the clean image where no
    iterate is misclassified, and where the clean image already is.

    Parameters
    ----------
    eps : float
        Ball radius in [0, 1] pixel units.
    steps : int
        Iterations (AutoAttack: 100).
    rho : float
        Share of loss-raising steps at or below which the step is halved (paper: 0.75).
    random_start : bool
        Start from a random point of the ball (as AutoAttack) or from the image.
    """

    name = "apgd-ce"

    def __init__(self, eps: float, steps: int = 100, rho: float = 0.75, random_start: bool = True) -> None:
        super().__init__(eps)
        self.steps = check_steps(steps)
        self.rho = check_positive("rho", rho, 1.0)
        self.random_start = bool(random_start)

    revision = 2  # 2: AutoAttack's returned image, momentum and schedule (1 returned the highest-loss point)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "steps": self.steps, "rho": self.rho, "random_start": self.random_start}

    @property
    def uses_noise(self) -> bool:
        return self.random_start

    def perturb(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource | None
    ) -> torch.Tensor:
        view = (-1,) + (1,) * (x.dim() - 1)
        with torch.no_grad():
            clean_right = model(x).argmax(1) == y  # AutoAttack attacks only these; the others come back clean
        if self.random_start:
            t = noise.draw()
            # AutoAttack's start: a random direction scaled so its largest entry reaches eps.
            t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(view)
            adv = (x + self.eps * t).clamp(0, 1)
        else:
            adv = x.clone()
        loss, grad, logits = self.input_gradient(model, adv, y)
        right = logits.argmax(1) == y
        fooling = adv.clone()  # AutoAttack's x_best_adv: starts at the start point
        best, best_loss, best_grad = adv.clone(), loss.clone(), grad.clone()
        step = torch.full((len(x),), 2.0 * self.eps, device=x.device)
        previous = adv.clone()
        # The reference compares each step's loss with the one before over the last k steps, from a history
        # that starts at zero and is indexed as numpy does: at the first checkpoint its first step is compared
        # with the history's last row, still 0, so it counts as a rise. Kept, to give the reference's steps.
        history = torch.zeros((self.steps, len(x)), device=x.device)
        checks = set(checkpoints(self.steps))
        last_check, best_at_last_check = 0, best_loss.clone()
        halved_at_last_check = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for i in range(self.steps):
            momentum = 0.75 if i > 0 else 1.0
            z = project(adv + step.view(view) * grad.sign(), x, self.eps)
            new = project(adv + (z - adv) * momentum + (adv - previous) * (1 - momentum), x, self.eps)
            previous, adv = adv, new
            loss, grad, logits = self.input_gradient(model, adv, y)
            wrong = logits.argmax(1) != y
            right &= ~wrong
            fooling[wrong] = adv[wrong]
            history[i] = loss
            improved = loss > best_loss
            best[improved], best_loss[improved], best_grad[improved] = adv[improved], loss[improved], grad[improved]
            if i + 1 in checks:
                span = i + 1 - last_check
                rises = sum((history[i - c] > history[(i - c - 1) % self.steps]).float() for c in range(span))
                halve = (rises <= span * self.rho) | (~halved_at_last_check & (best_at_last_check >= best_loss))
                step[halve] /= 2
                adv[halve], grad[halve] = best[halve], best_grad[halve]
                halved_at_last_check, best_at_last_check = halve, best_loss.clone()
                last_check = i + 1
        return torch.where((clean_right & ~right).view(view), fooling, x)
