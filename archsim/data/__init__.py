"""Data: labelled uint8 image sets in one canonical pixel space."""

from archsim.data.imageset import ImageSet, stratified_indices
from archsim.data.loaders import DATA_SCHEMES, imagenet_wnids, load_data
from archsim.data.memory import memory_spec

__all__ = ["ImageSet", "stratified_indices", "load_data", "DATA_SCHEMES", "imagenet_wnids", "memory_spec"]
