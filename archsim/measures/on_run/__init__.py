"""The similarity measures of a finished run, one per file behind :class:`RunMeasure`: their per-item values, the
matrix they make and one pair's resampled value, for archsim's measures and plugins' alike."""

from archsim.measures.on_run.base import MeasureInputs, Resampler, RunMeasure
from archsim.measures.on_run.boundary import BoundaryGap
from archsim.measures.on_run.cka import CKA
from archsim.measures.on_run.consistency import ErrorConsistency
from archsim.measures.on_run.disagreement import Disagreement
from archsim.measures.on_run.plugin import PluginMeasure
from archsim.measures.on_run.regions import DecisionRegions

BUILTIN: dict[str, RunMeasure] = {
    measure.name: measure for measure in (Disagreement(), ErrorConsistency(), CKA(), DecisionRegions(), BoundaryGap())
}
"""archsim's measures by name, in the order of :data:`archsim.measures.MEASURES`."""

__all__ = [
    "BUILTIN",
    "BoundaryGap",
    "CKA",
    "DecisionRegions",
    "Disagreement",
    "ErrorConsistency",
    "MeasureInputs",
    "PluginMeasure",
    "Resampler",
    "RunMeasure",
]
