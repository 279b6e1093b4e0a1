"""Disagreement: the share of images two models label differently, from the run's clean predictions."""

from __future__ import annotations

import numpy as np

from archsim.measures import MEASURES
from archsim.measures.on_run.base import MeasureInputs, RunMeasure


class Disagreement(RunMeasure):
    name = "disagreement"
    description = MEASURES[name]
    passes_per_item = 2

    def items(self, inputs: MeasureInputs) -> np.ndarray:
        pred = inputs.transfer.clean_pred
        # bool: 69 models x 50,000 images would be 1.9 GB as floats
        return pred[:, None, :] != pred[None, :, :]
