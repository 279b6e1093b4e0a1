"""Fast gradient sign method (Goodfellow et al., 2015): one step of size eps."""

from __future__ import annotations

import torch

from archsim.attacks.base import Attack, NoiseSource, project


class FGSM(Attack):
    """One signed-gradient step of size ``eps`` on cross-entropy; deterministic.

    Parameters
    ----------
    eps : float
        Ball radius in [0, 1] pixel units.
    """

    name = "fgsm"

    def perturb(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource | None
    ) -> torch.Tensor:
        _, grad, _ = self.input_gradient(model, x, y)
        return project(x + self.eps * grad.sign(), x, self.eps)
