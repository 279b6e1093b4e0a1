"""Models: one registry from spec strings to one frozen wrapper type."""

from archsim.models import objects, sources, zoo  # noqa: F401  (registers the spec schemes)
from archsim.models.fastpath import (
    PRECISIONS,
    Purpose,
    channels_last_by_default,
    check_precision,
    convolutional,
    default_precision,
    precision_context,
    prepare,
    to_channels_last,
)
from archsim.models.objects import ModelObject, model_specs, object_spec
from archsim.models.registry import (
    check_model_specs,
    create_model,
    model_schemes,
    register_source,
)
from archsim.models.wrapper import Preprocess, SimModel
from archsim.models.zoo import ZOO, train_zoo, zoo_specs

__all__ = [
    "create_model",
    "ModelObject",
    "model_specs",
    "object_spec",
    "check_model_specs",
    "model_schemes",
    "register_source",
    "Preprocess",
    "SimModel",
    "ZOO",
    "train_zoo",
    "zoo_specs",
    "PRECISIONS",
    "Purpose",
    "channels_last_by_default",
    "check_precision",
    "convolutional",
    "default_precision",
    "precision_context",
    "prepare",
    "to_channels_last",
]
