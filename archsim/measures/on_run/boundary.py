"""The gap between two models' decision boundaries along each model's sign-gradient direction (Tramer et al.; a
dissimilarity): each (source, target) row cached, a source's missing targets computed in as few passes over the
images as memory allows."""

from __future__ import annotations

import numpy as np
import torch

from archsim.cache import digest
from archsim.measures import MEASURES, boundary
from archsim.measures.on_run.base import MeasureInputs, RunMeasure
from archsim.models import SimModel
from archsim.transfer.batching import weight_bytes


class BoundaryGap(RunMeasure):
    name = "boundary"
    description = MEASURES[name]
    passes_per_item = 4 + 4 * boundary.DEFAULT_POINTS

    def items(self, inputs: MeasureInputs) -> np.ndarray:
        specs, fingerprints, store = inputs.transfer.specs, inputs.transfer.fingerprints, inputs.store
        reach, points = 4 * inputs.eps, boundary.DEFAULT_POINTS
        distances = np.empty((len(specs), len(specs), len(inputs.images)))
        for s, (source, fp_s) in enumerate(zip(specs, fingerprints, strict=True)):
            keys = [digest("boundary", fp_s, fp_t, inputs.images.fingerprint, reach, points) for fp_t in fingerprints]
            computed: dict[int, np.ndarray] = {}

            def compute(t: int, source: str = source, keys: list[str] = keys, computed: dict = computed) -> dict:
                if t not in computed:
                    todo = [u for u in range(len(specs)) if u == t or not store.contains("boundary", keys[u])]
                    computed.update(boundary_along(inputs, source, todo, reach=reach, points=points))
                return {"distance": computed.pop(t)}

            for t in range(len(specs)):
                distances[s, t] = store.get_or_compute("boundary", keys[t], lambda t=t: compute(t))["distance"]
        both = inputs.transfer.clean_correct[:, None, :] & inputs.transfer.clean_correct[None, :, :]
        return boundary.boundary_gap(distances, both)


def boundary_along(
    inputs: MeasureInputs, source: str, todo: list[int], *, reach: float, points: int
) -> dict[int, np.ndarray]:
    """Distances of the targets ``todo`` along ``source``'s directions: the images streamed once past the source and
    each group of targets that fits beside it (one group where all fit)."""
    specs, model_of = inputs.transfer.specs, inputs.models
    labels = torch.as_tensor(inputs.transfer.labels)
    found: dict[int, np.ndarray] = {}
    along = model_of(source)
    group: list[tuple[int, SimModel]] = []
    held = weight_bytes(along)
    for k, u in enumerate(todo):
        target = along if specs[u] == source else model_of(specs[u])
        group.append((u, target))
        held += weight_bytes(target) if target is not along else 0
        full = len(group) + 1 >= model_of.budget.models or held >= model_of.budget.bytes
        if full or k == len(todo) - 1:
            rows = boundary.boundary_distances(
                along,
                [m for _, m in group],
                inputs.images.images,
                labels,
                reach,
                points,
                inputs.sized(along, "attack"),
                [inputs.sized(m) for _, m in group],
            )
            found.update(zip([v for v, _ in group], rows, strict=True))
            group, held = [], weight_bytes(along)
    return found
