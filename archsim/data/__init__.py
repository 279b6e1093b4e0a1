"""Data: labelled uint8 image sets, and the view of them each model sees."""

from archsim.data.imageset import VIEWS, ImageSet, stratified_indices
from archsim.data.loaders import DATA_SCHEMES, imagenet_wnids, load_data
from archsim.data.memory import memory_spec
from archsim.data.views import View

__all__ = [
    "ImageSet",
    "VIEWS",
    "View",
    "stratified_indices",
    "load_data",
    "DATA_SCHEMES",
    "imagenet_wnids",
    "memory_spec",
]
