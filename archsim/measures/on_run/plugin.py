"""A plugin's measure (entry point group ``archsim.measures``) behind the same interface as archsim's own."""

from __future__ import annotations

from typing import Any

import numpy as np

from archsim.cache import digest
from archsim.errors import ArchsimError
from archsim.measures.on_run.base import MeasureInputs, RunMeasure


class PluginMeasure(RunMeasure):
    """Wraps an object of the :class:`archsim.applications.measures.Measure` shape: its ``items(models, specs,
    images, transfer)`` checked for shape and cached under its version, the models, the images and the seed; its
    matrix the mean over items."""

    def __init__(self, name: str, plugin: Any) -> None:
        self.name, self.plugin = name, plugin
        self.description, self.passes_per_item = plugin.description, plugin.passes_per_item

    def items(self, inputs: MeasureInputs) -> np.ndarray:
        specs, plugin = inputs.transfer.specs, self.plugin

        def compute() -> dict[str, np.ndarray]:
            values = np.asarray(plugin.items(inputs.models, specs, inputs.images, inputs.transfer), dtype=float)
            if values.ndim != 3 or values.shape[:2] != (len(specs), len(specs)):
                raise ArchsimError(
                    f"plugin measure {self.name!r} gave values of shape {values.shape}, not [{len(specs)}, "
                    f"{len(specs)}, items]; fix the plugin"
                )
            return {"items": values}

        key = digest(
            "plugin measure",
            self.name,
            plugin.version,
            inputs.transfer.fingerprints,
            inputs.images.fingerprint,
            inputs.seed,
        )
        return inputs.store.get_or_compute("measure", key, compute)["items"]
