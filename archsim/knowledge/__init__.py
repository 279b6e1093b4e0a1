"""Adversarial vs knowledge transferability (Liang et al., docs/method.md#knowledge)."""

from archsim.knowledge.alphas import alpha_1, alpha_2
from archsim.knowledge.synthetic import liang_synthetic

__all__ = ["alpha_1", "alpha_2", "liang_synthetic"]
