"""One registry from spec strings to :class:`SimModel` (mirrors ``timm.create_model``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from archsim.cache import CacheStore
from archsim.errors import ArchsimError
from archsim.models.wrapper import SimModel
from archsim.specs import Spec, parse_spec

ModelSource = Callable[[Spec, CacheStore], SimModel]
_SOURCES: dict[str, ModelSource] = {}


def register_source(scheme: str) -> Callable[[ModelSource], ModelSource]:
    """Register the loader of ``scheme:`` specs."""

    def decorate(fn: ModelSource) -> ModelSource:
        _SOURCES[scheme] = fn
        return fn

    return decorate


def model_schemes() -> tuple[str, ...]:
    return tuple(_SOURCES)


def create_model(spec: str, cache: CacheStore | None = None, device: str = "cpu") -> SimModel:
    """Build the wrapped, frozen model a spec names.

    Parameters
    ----------
    spec : str
        ``zoo:NAME[,epoch=E]``, ``timm:NAME[,pretrained=false][,checkpoint=PATH][,num_classes=K]``,
        ``torchvision:NAME[,pretrained=false][,checkpoint=PATH]`` or
        ``file:PATH[,input_size=C:H:W][,mean=..][,std=..]``; every scheme also
        takes ``name=DISPLAY``.
    cache : CacheStore, optional
        Where the embedded zoo keeps its trained weights.
    device : str
        Torch device to move the model to.
    """
    parsed = parse_spec(spec, model_schemes())
    display = parsed.take("name")
    model = _SOURCES[parsed.scheme](parsed, cache or CacheStore())
    parsed.finish()
    if display:
        model.name = display
    return model.to(device)


def require_file(spec: Spec, key: str) -> str | None:
    """The path in option ``key``, checked to exist."""
    value = spec.take(key)
    if value is not None and not Path(value).expanduser().is_file():
        raise ArchsimError(f"{key} file {value} does not exist; fix {key}= in {spec.text!r}")
    return value
