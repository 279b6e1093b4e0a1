"""Linear CKA of the classifier's input features (Kornblith et al.): one forward pass per image and model, the
features cached per model and read back a chunk of rows at a time."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from archsim.cache import digest
from archsim.measures import MEASURES, cka_matrix, linear_cka
from archsim.measures.on_run.base import MeasureInputs, Resampler, RunMeasure
from archsim.models.features import feature_batches


class CKA(RunMeasure):
    name = "cka"
    description = MEASURES[name]
    passes_per_item = 2

    def items(self, inputs: MeasureInputs) -> list[np.ndarray]:
        """Memory maps of each model's cached features, [images, features]."""
        store, images = inputs.store, inputs.images

        def features_of(spec: str) -> Iterator[np.ndarray]:
            model = inputs.models(spec)
            return feature_batches(model, images.images, inputs.sized(model))

        return [
            store.get_or_stream(
                "feat",
                digest("features", fp, images.fingerprint),
                "features",
                (len(images), -1),
                np.float32,
                lambda spec=spec: features_of(spec),
            ).mapped("features")
            for spec, fp in zip(inputs.transfer.specs, inputs.transfer.fingerprints, strict=True)
        ]

    def matrix(self, items: list[np.ndarray]) -> np.ndarray:
        return cka_matrix(items)

    def resampler(self, items: list[np.ndarray], a: int, b: int) -> tuple[Resampler, int]:
        # A draw's counts weight the rows: the drawn features (budget/2 rows, often many times the set) are never
        # built.
        rows = len(items[a])
        return (lambda idx: linear_cka(items[a], items[b], weights=np.bincount(idx, minlength=rows))), rows
