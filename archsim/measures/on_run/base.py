"""What every measure of a finished run provides, and what it is computed from."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from archsim.cache import CacheStore
from archsim.data import ImageSet
from archsim.models import Purpose, SimModel
from archsim.transfer import TransferResult
from archsim.transfer.batching import ResidentModels, batch_size_for

Resampler = Callable[[np.ndarray], float]
"""One pair's value of a measure on the items at the given indices (drawn with replacement)."""


@dataclass(frozen=True, kw_only=True)
class MeasureInputs:
    """What a measure's per-item values are made from: a finished run's transfer result and images, its models
    (loaded within a memory budget, :class:`~archsim.transfer.batching.ResidentModels`), the cache, and the run's radius
    and seed."""

    transfer: TransferResult
    images: ImageSet
    models: ResidentModels
    store: CacheStore
    eps: float
    seed: int
    batch_size: int | str

    def sized(self, model: SimModel, purpose: Purpose = "evaluate") -> int:
        """The model's batch size for ``purpose`` on the run's images (searched once, then cached)."""
        shape = tuple(self.images.images.shape[1:])
        return batch_size_for(model, self.batch_size, purpose, shape, len(self.images), self.store)


class RunMeasure:
    """A similarity measure of a run's models: its per-item values (the expensive part, cached), the N x N matrix
    they make, and one pair's value on resampled items, for the comparison at equal compute.

    The default matrix is the mean over items (NaN where a pair has no value on an item) and the default resample the
    mean over the drawn items of the pair's values: the shape of a measure that is a mean over images or planes.
    """

    name: str
    description: str
    passes_per_item: int
    """Forward or backward passes per item and pair."""

    def items(self, inputs: MeasureInputs) -> Any:
        raise NotImplementedError

    def matrix(self, items: Any) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs stay NaN
            return np.nanmean(items, axis=-1)

    def resampler(self, items: Any, a: int, b: int) -> tuple[Resampler, int]:
        """Pair (a, b)'s value on drawn items, and how many items there are to draw from."""
        values = items[a, b]
        return (lambda idx: float(np.nanmean(values[idx])) if np.isfinite(values[idx]).any() else np.nan), len(values)
