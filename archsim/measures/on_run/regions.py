"""Decision-region agreement on planes through image triplets (Somepalli et al.): each model's labels on the planes
cached, every pair's agreement per plane."""

from __future__ import annotations

import numpy as np

from archsim.cache import digest
from archsim.measures import MEASURES, regions
from archsim.measures.on_run.base import MeasureInputs, RunMeasure


class DecisionRegions(RunMeasure):
    name = "regions"
    description = MEASURES[name]
    passes_per_item = 2 * regions.DEFAULT_RESOLUTION**2

    def items(self, inputs: MeasureInputs) -> np.ndarray:
        store, images = inputs.store, inputs.images
        triplets = regions.plane_triplets(images.labels.numpy(), regions.DEFAULT_TRIPLETS, inputs.seed)
        setting = (regions.DEFAULT_TRIPLETS, regions.DEFAULT_RESOLUTION, regions.MARGIN, inputs.seed)

        def planes_of(spec: str) -> dict[str, np.ndarray]:
            model = inputs.models(spec)
            return {"labels": regions.region_labels(model, images.images, triplets, batch_size=inputs.sized(model))}

        planes = [
            store.get_or_compute(
                "regions", digest("regions", fp, images.fingerprint, setting), lambda spec=spec: planes_of(spec)
            )["labels"]
            for spec, fp in zip(inputs.transfer.specs, inputs.transfer.fingerprints, strict=True)
        ]
        return regions.region_agreement(planes)
