"""Models given as Python objects: ``nn.Module`` instances, named by ``object:NAME,fingerprint=KEY`` specs.

:func:`object_spec` takes a snapshot of a module (a copy on the CPU, so that
training it further or moving it changes nothing archsim holds), works out its
preprocessing, holds both in this process (:mod:`archsim.held`) under the
module's content fingerprint and returns the spec that names them. From there
on the module is a model like any other: the stages build it from its spec, its
results are cached under the same model fingerprint as the same network loaded
from a file or a hub, and an engine ships it to the processes that need it.

The fingerprint covers what archsim can see: the class's qualified name, the
module tree (its ``repr``), every parameter and buffer (persistent or not) and
the preprocessing. It cannot see code: a module whose ``forward`` changes while
its weights do not is the user's to version (give it another name and class).
"""

from __future__ import annotations

import copy
import io
import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from archsim.cache import CacheStore
from archsim.data.views import timm_scale_size
from archsim.errors import ArchsimError, ParameterError, one_line
from archsim.held import held, hold
from archsim.models.registry import name_problem, register_source
from archsim.models.sources import timm_preprocess
from archsim.models.wrapper import Preprocess, SimModel, network_fingerprint
from archsim.specs import Spec, parse_spec

SCHEME = "object"
ModelObject = nn.Module | tuple[nn.Module, Preprocess | Mapping[str, Any]]
"""A module, or a module with its preprocessing (:func:`check_preprocess`)."""
KEY_DIGITS = 16
"""Hex digits of the fingerprint an ``object:`` spec carries (64 bits: the key a module is held under)."""
_KEY = re.compile(rf"[0-9a-f]{{{KEY_DIGITS}}}")


@dataclass(frozen=True)
class HeldModule:
    """What an ``object:`` spec names: a snapshot of the network on the CPU, its preprocessing, its class."""

    net: nn.Module
    preprocess: Preprocess
    qualname: str


def check_preprocess(net: nn.Module, preprocess: Preprocess | Mapping[str, Any] | None, name: str) -> Preprocess:
    """The preprocessing of ``net``: ``preprocess`` as given (a :class:`Preprocess`, or a mapping of its arguments
    ``input_size``, ``mean``, ``std``, ``interpolation``, and timm's ``crop_pct`` and ``crop_mode`` for the view of
    image files), else timm's data config of the module (its ``pretrained_cfg``); a one-line error where neither is
    there."""
    if isinstance(preprocess, Preprocess):
        return copy.deepcopy(preprocess).cpu()
    if isinstance(preprocess, Mapping):
        unknown = sorted(set(preprocess) - {"input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode"})
        if unknown or "mean" not in preprocess or "std" not in preprocess:
            raise ParameterError(
                "models",
                f"the preprocessing of {name} takes mean, std and optionally input_size, interpolation, crop_pct and "
                f"crop_mode; "
                f"{f'got {unknown[0]!r}' if unknown else 'mean and std are missing'}",
            )
        mean, std = preprocess["mean"], preprocess["std"]
        size, crop_pct = preprocess.get("input_size"), preprocess.get("crop_pct")
        try:
            if crop_pct is not None and (size is None or not 0 < float(crop_pct) <= 1):
                raise ValueError("crop_pct must lie in (0, 1], with an input_size")
            return Preprocess(
                size,
                [mean] if isinstance(mean, (int, float)) else mean,
                [std] if isinstance(std, (int, float)) else std,
                preprocess.get("interpolation", "bilinear"),
                resize=timm_scale_size(tuple(size)[1:], float(crop_pct)) if crop_pct is not None else None,
                crop_mode=preprocess.get("crop_mode", "center"),
            )
        except (ValueError, TypeError) as error:
            raise ParameterError("models", f"the preprocessing of {name} is not usable: {error}") from None
    if preprocess is not None:
        raise ParameterError(
            "models", f"the preprocessing of {name} is a {type(preprocess).__name__}; give a Preprocess or a dict"
        )
    config = getattr(net, "pretrained_cfg", None)
    if isinstance(config, Mapping) and config.get("mean") is not None and config.get("input_size") is not None:
        return timm_preprocess(net)
    raise ParameterError(
        "models",
        f"module {name} has no preprocessing archsim can read (no timm pretrained_cfg); pass it with one, e.g. "
        "{'"
        + name
        + "': (module, {'input_size': (3, 224, 224), 'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)})}",
    )


def object_key(held_module: HeldModule) -> str:
    """The content fingerprint of a held module: its class's qualified name, its module tree, every parameter and
    buffer (persistent or not), its preprocessing."""
    h = network_fingerprint(held_module.net, held_module.preprocess)
    h.update(held_module.qualname.encode())
    persistent = set(held_module.net.state_dict())
    for key, buffer in sorted(held_module.net.named_buffers()):
        if key not in persistent:
            h.update(key.encode())
            h.update(buffer.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def object_spec(module: nn.Module, name: str | None = None, preprocess: Preprocess | Mapping | None = None) -> str:
    """Hold a snapshot of ``module`` in this process and return the spec that names it.

    Parameters
    ----------
    module : nn.Module
        A classifier taking normalised images (or a :class:`SimModel`, whose preprocessing it brings).
    name : str, optional
        Its name in the run (default: timm's architecture name, else the class name, lower case).
    preprocess : Preprocess or dict, optional
        See :func:`check_preprocess`; default: timm's data config of the module.

    Returns
    -------
    str
        ``object:NAME,fingerprint=KEY``, usable wherever a model spec is.
    """
    if isinstance(module, SimModel):
        preprocess = module.preprocess if preprocess is None else preprocess
        name = name or module.name
        module = module.net
    if not isinstance(module, nn.Module):
        raise ParameterError("models", f"got a {type(module).__name__} where a spec string or an nn.Module belongs")
    name = default_name(module) if name is None else name
    why = name_problem(name) if isinstance(name, str) else "it is not a string"
    if why is None and ("," in name or "=" in name):
        why = "it holds ',' or '='"
    if why:
        raise ParameterError("models", f"{name!r} cannot name a model ({why}); give a plain name, e.g. my-model")
    chosen = check_preprocess(module, preprocess, name)
    try:
        snapshot = copy.deepcopy(module).cpu()
    except Exception as error:  # noqa: BLE001 - a module may refuse copying in its own way
        raise ParameterError(
            "models", f"module {name} cannot be copied ({one_line(error)}); archsim attacks a copy, never yours"
        ) from None
    cls = type(module)
    held_module = HeldModule(snapshot.eval(), chosen, f"{cls.__module__}.{cls.__qualname__}")
    key = object_key(held_module)[:KEY_DIGITS]
    hold(key, held_module)
    return f"{SCHEME}:{name},fingerprint={key}"


def default_name(module: nn.Module) -> str:
    config = getattr(module, "pretrained_cfg", None)
    if isinstance(config, Mapping) and isinstance(config.get("architecture"), str):
        return config["architecture"]
    return type(module).__name__.lower()


def model_specs(models: Sequence[str | ModelObject] | Mapping[str, str | ModelObject]) -> list[str]:
    """Model specs for ``models``: spec strings as they are, modules (alone or as ``(module, preprocess)``) through
    :func:`object_spec`; in a mapping, the key names the model. Modules left unnamed in a list are told apart by
    a suffix (``resnet18``, ``resnet18-2``)."""
    if isinstance(models, (str, bytes)):
        raise ParameterError("models", "must be a list of specs or modules, or a {name: model} mapping; got a string")
    named = list(models.items()) if isinstance(models, Mapping) else [(None, model) for model in models]
    specs: list[str] = []
    taken: dict[str, int] = {}
    for name, model in named:
        if isinstance(model, str):
            specs.append(model if name is None else f"{model},name={name}")
            continue
        net, preprocess = model if isinstance(model, tuple) and len(model) == 2 else (model, None)
        if name is None and isinstance(net, nn.Module) and not isinstance(net, SimModel):
            base = default_name(net)
            taken[base] = taken.get(base, 0) + 1
            name = base if taken[base] == 1 else f"{base}-{taken[base]}"
        specs.append(object_spec(net, name, preprocess))
    return specs


def keep_modules(specs: list[str], store: CacheStore) -> set[tuple[str, str]]:
    """Save the modules the ``object:`` specs among ``specs`` name into ``store``, for later commands in other
    processes (``archsim add``, ``measures``...) to rebuild; returns the cache entries that hold them. A module that
    cannot be pickled is left out with a warning (its run still completes)."""
    kept = set()
    for spec in specs:
        if spec.split(":", 1)[0] != SCHEME:
            continue
        name, key = _parts(parse_spec(spec, (SCHEME,)))
        found = held(key)
        if not store.contains("module", key):
            if found is None:
                continue
            buffer = io.BytesIO()
            try:
                torch.save(found, buffer)  # the Preprocess whole: its description rounds mean and std
            except Exception as error:  # noqa: BLE001 - pickling fails in many ways (a lambda, a local class)
                warnings.warn(
                    f"model {name} cannot be saved with the run ({one_line(error)}); commands on the run in another "
                    "process need it passed again from Python",
                    stacklevel=2,
                )
                continue
            store.get_or_compute(
                "module", key, lambda buffer=buffer: {"pickle": np.frombuffer(buffer.getvalue(), dtype=np.uint8)}
            )
        kept.add(("module", key))
    return kept


def _parts(spec: Spec) -> tuple[str, str]:
    key = spec.take("fingerprint") or ""
    if not _KEY.fullmatch(key):
        raise ArchsimError(
            f"{spec.text!r} needs fingerprint=<{KEY_DIGITS} hex digits>; make object specs with object_spec()"
        )
    why = name_problem(spec.target)
    if why:
        raise ArchsimError(f"{spec.text!r} cannot name a model ({why})")
    return spec.target, key


def _restore(name: str, key: str, store: CacheStore) -> HeldModule:
    found = store.find("module", key)
    if found is None:
        raise ArchsimError(
            f"model {name} is a module given in Python (fingerprint {key[:12]}) that this process does not hold and "
            f"the cache {store.root} has not kept; pass it again, e.g. run_sat(models={{'{name}': module}}, ...)"
        )
    try:
        restored = torch.load(io.BytesIO(found["pickle"].tobytes()), map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - unpickling fails where the class cannot be imported
        raise ArchsimError(
            f"model {name} was saved from a module this process cannot rebuild ({one_line(error)}); import its class "
            "first, or pass the module again from Python"
        ) from None
    if not isinstance(restored, HeldModule) or not object_key(restored).startswith(key):
        raise ArchsimError(f"the cache's copy of model {name} does not match its fingerprint; pass the module again")
    hold(key, restored)
    return restored


@register_source(SCHEME, check=lambda spec: _parts(spec)[0])
def object_model(spec: Spec, cache: CacheStore) -> SimModel:
    """``object:NAME,fingerprint=KEY``: the module :func:`object_spec` holds under KEY (in this process, shipped to
    it by an engine, or saved in the cache by a run with a folder)."""
    name, key = _parts(spec)
    found = held(key) or _restore(name, key, cache)
    # A copy: SimModel freezes and moves its network, and each task builds its own.
    return SimModel(
        copy.deepcopy(found.net),
        copy.deepcopy(found.preprocess),
        name,
        spec.text,
        {"source": "python", "class": found.qualname},
    )


__all__ = ["HeldModule", "ModelObject", "check_preprocess", "model_specs", "object_key", "object_spec", "keep_modules"]
