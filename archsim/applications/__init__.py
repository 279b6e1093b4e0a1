"""Decisions from a SAT run (docs/method.md#decisions): ensembles, distillation teachers, a newcomer
in the zoo, diverse selection, and the paper's further checks."""

from archsim.applications.selection import METHODS, compare_samplers, diverse_sample

__all__ = ["METHODS", "compare_samplers", "diverse_sample"]
