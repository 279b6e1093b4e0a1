"""Error consistency: Cohen's kappa of two models' correct/wrong patterns (Geirhos et al.), from the run's clean
predictions."""

from __future__ import annotations

import numpy as np

from archsim.measures import MEASURES, error_consistency
from archsim.measures.on_run.base import MeasureInputs, Resampler, RunMeasure


class ErrorConsistency(RunMeasure):
    name = "error-consistency"
    description = MEASURES[name]
    passes_per_item = 2

    def items(self, inputs: MeasureInputs) -> np.ndarray:
        return inputs.transfer.clean_correct  # [models, images]: kappa is not a mean over images

    def matrix(self, items: np.ndarray) -> np.ndarray:
        return error_consistency(items)

    def resampler(self, items: np.ndarray, a: int, b: int) -> tuple[Resampler, int]:
        return (lambda idx: float(error_consistency(items[[a, b]][:, idx])[0, 1])), items.shape[-1]
