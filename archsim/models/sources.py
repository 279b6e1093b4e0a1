"""Model sources for ``timm:``, ``torchvision:`` and ``file:`` specs."""

from __future__ import annotations

import os
import socket
import urllib.parse
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import timm
import torch
import torchvision

from archsim.cache import CacheStore
from archsim.errors import ArchsimError, one_line
from archsim.models.registry import register_source, require_file
from archsim.models.wrapper import Preprocess, SimModel
from archsim.specs import Spec


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Draw the weights a model is built with from ``seed``, leaving torch's generator as it was.

    Every weight not loaded from a file is drawn at construction: all of them with
    ``pretrained=false``, a new head with ``num_classes=``. Unseeded, each process that
    builds the model (the attack, every evaluation) would hold another model, with another fingerprint.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def timm_preprocess(net: torch.nn.Module) -> Preprocess:
    """Preprocessing from timm's resolved data config of ``net``."""
    cfg = timm.data.resolve_data_config(model=net)
    interpolation = cfg.get("interpolation", "bicubic")
    return Preprocess(
        cfg["input_size"],
        cfg["mean"],
        cfg["std"],
        interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic",
    )


def _weights_options(spec: Spec, *sizes: str) -> dict[str, Any]:
    """The options timm and torchvision specs share: ``checkpoint``, ``pretrained``, ``init_seed`` and ``sizes``."""
    checkpoint = require_file(spec, "checkpoint")
    return {
        "checkpoint": checkpoint,
        "pretrained": spec.take_bool("pretrained", checkpoint is None) and checkpoint is None,
        "init_seed": spec.take_int("init_seed", 0, minimum=0),
        "kwargs": {key: value for key in sizes if (value := spec.take_int(key)) is not None},
        "name": spec.target,
    }


def timm_options(spec: Spec) -> dict[str, Any]:
    """A ``timm:`` spec's target and options, taken and checked (its model's name among them); builds nothing."""
    if not timm.is_model(spec.target):  # knows pretrained tags and timm's deprecated aliases too
        raise ArchsimError(f"unknown timm model {spec.target!r}; see timm.list_models() for the names")
    return _weights_options(spec, "num_classes", "in_chans")


HUB_TIMEOUT_S = 3.0
"""How long a download host may take to accept a connection before archsim calls it unreachable."""
_UNREACHABLE: dict[str, str | None] = {}


def unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached (a connection to it fails within :data:`HUB_TIMEOUT_S`), or None.

    Checked once per host and process: where there is no network, hub clients retry for close to a minute
    before they fail (timm's weights: 46 s seen here), per model.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host not in _UNREACHABLE:
        try:
            socket.create_connection(
                (host, parts.port or (443 if parts.scheme == "https" else 80)), timeout=HUB_TIMEOUT_S
            ).close()
            _UNREACHABLE[host] = None
        except OSError as error:
            _UNREACHABLE[host] = error.strerror or type(error).__name__
    return _UNREACHABLE[host]


def _offline_error(spec: Spec, host: str, why: str) -> ArchsimError:
    return ArchsimError(
        f"pretrained weights of {spec.text!r} are not in the local cache and {host} cannot be reached ({why}); "
        "pass checkpoint=PATH for local weights or pretrained=false, or download them once where there is network"
    )


def _check_timm_weights_at_hand(spec: Spec) -> None:
    """Fail in seconds, not after the hub client's retries, when the weights are neither cached nor downloadable."""
    import huggingface_hub

    config = timm.models.get_pretrained_cfg(spec.target)
    if (
        config is None
        or not config.hf_hub_id
        or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    ):
        return  # no hub weights, or offline mode, in which the client fails at once by itself
    filenames = (config.hf_hub_filename,) if config.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
    if any(isinstance(huggingface_hub.try_to_load_from_cache(config.hf_hub_id, name), str) for name in filenames):
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    why = unreachable(endpoint)
    if why is not None:
        raise _offline_error(spec, urllib.parse.urlsplit(endpoint).hostname or endpoint, why)


@register_source("timm", check=lambda spec: timm_options(spec)["name"])
def timm_model(spec: Spec, cache: CacheStore) -> SimModel:
    """``timm:NAME``: hub weights by default, ``checkpoint=PATH`` for local ones, ``pretrained=false`` for random
    weights drawn from ``init_seed`` (default 0)."""
    options = timm_options(spec)
    if options["pretrained"]:
        _check_timm_weights_at_hand(spec)
    try:
        with seeded_init(options["init_seed"]):
            net = timm.create_model(spec.target, pretrained=options["pretrained"], **options["kwargs"])
    except (OSError, ConnectionError) as error:
        raise ArchsimError(
            f"cannot fetch pretrained weights for timm:{spec.target} ({type(error).__name__}); "
            "pass checkpoint=PATH for local weights or pretrained=false"
        ) from None
    if options["checkpoint"] is not None:
        _load_state(net, options["checkpoint"], spec)
    # timm's pretrained tag names the recipe the hub weights were trained with (a1_in1k, tv_in1k, tf_adv_in1k).
    return SimModel(
        net,
        timm_preprocess(net),
        options["name"],
        spec.text,
        {"source": "timm", **_training(options, net.pretrained_cfg.get("tag"))},
    )


def torchvision_options(spec: Spec) -> dict[str, Any]:
    """A ``torchvision:`` spec's target and options, taken and checked (its model's name among them); builds nothing."""
    if spec.target not in torchvision.models.list_models():
        raise ArchsimError(f"unknown torchvision model {spec.target!r}; see torchvision.models.list_models()")
    return _weights_options(spec, "num_classes")


@register_source("torchvision", check=lambda spec: torchvision_options(spec)["name"])
def torchvision_model(spec: Spec, cache: CacheStore) -> SimModel:
    """``torchvision:NAME``: default weights, or ``checkpoint=PATH``, or ``pretrained=false`` (random weights from
    ``init_seed``)."""
    options = torchvision_options(spec)
    weights = torchvision.models.get_model_weights(spec.target).DEFAULT
    if options["pretrained"]:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlsplit(weights.url).path).name
        why = None if cached.is_file() else unreachable(weights.url)
        if why is not None:
            raise _offline_error(spec, urllib.parse.urlsplit(weights.url).hostname or weights.url, why)
    try:
        with seeded_init(options["init_seed"]):
            net = torchvision.models.get_model(
                spec.target, weights=weights if options["pretrained"] else None, **options["kwargs"]
            )
    except (OSError, ConnectionError, RuntimeError) as error:
        raise ArchsimError(
            f"cannot fetch pretrained weights for torchvision:{spec.target} ({type(error).__name__}); "
            "pass checkpoint=PATH for local weights or pretrained=false"
        ) from None
    if options["checkpoint"] is not None:
        _load_state(net, options["checkpoint"], spec)
    preset = weights.transforms()
    preprocess = Preprocess(
        (3, *preset.crop_size * (2 if len(preset.crop_size) == 1 else 1)),
        preset.mean,
        preset.std,
        preset.interpolation.value,
    )
    return SimModel(
        net, preprocess, options["name"], spec.text, {"source": "torchvision", **_training(options, weights.name)}
    )


def _training(options: dict[str, Any], hub_recipe: str | None) -> dict[str, Any]:
    """Training regime and seed for the training-vs-architecture table (SPEC §2.5): the hub weights'
    recipe, or ``untrained`` with the ``init_seed`` for random weights; nothing for a checkpoint,
    whose training archsim cannot know."""
    if options["pretrained"]:
        return {"regime": hub_recipe or ""}
    if options["checkpoint"] is None:
        return {"regime": "untrained", "seed": options["init_seed"]}
    return {}


def file_options(spec: Spec) -> dict[str, Any]:
    """A ``file:`` spec's target and options, taken and checked (its model's name among them); builds nothing."""
    path = Path(spec.target).expanduser()
    if not path.is_file():
        raise ArchsimError(f"model file {path} does not exist; check the path in {spec.text!r}")
    size = spec.take_floats("input_size")
    mean = spec.take_floats("mean") or (0.0,)
    std = spec.take_floats("std") or (1.0,)
    interpolation = spec.take("interpolation", "bilinear")
    if size is not None and len(size) != 3:
        raise ArchsimError(f"input_size in {spec.text!r} must be C:H:W, e.g. 3:224:224")
    try:
        preprocess = Preprocess(size, mean, std, interpolation)
    except ValueError as error:
        raise ArchsimError(f"bad preprocessing options in {spec.text!r}: {error}") from None
    return {"path": path, "preprocess": preprocess, "name": path.stem}


@register_source("file", check=lambda spec: file_options(spec)["name"])
def file_model(spec: Spec, cache: CacheStore) -> SimModel:
    """``file:PATH``: a TorchScript file or a pickled ``nn.Module`` (``torch.save(model)``).

    Options ``input_size=C:H:W`` (default: no resizing), ``mean=..``/``std=..``
    (colon-separated; default 0 and 1, i.e. the module takes [0, 1] pixels) and
    ``interpolation=bilinear|bicubic``.
    """
    options = file_options(spec)
    path = options["path"]
    try:
        if _is_torchscript(path):  # asked first, torch.jit.load warned of its deprecation on every pickled module too
            net = torch.jit.load(str(path), map_location="cpu")
        else:
            # Only the user's own files come here; a pickled module cannot load with weights_only.
            net = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any loading failure is the file's fault
        raise ArchsimError(
            f"cannot load model file {path} ({_why_unreadable(path, error)}); save it with torch.save(model) or "
            f"torch.jit.save"
        ) from None
    if not isinstance(net, torch.nn.Module):
        raise ArchsimError(
            f"model file {path} holds a {type(net).__name__}, not a module; for a state dict use "
            f"timm:NAME,checkpoint={path}"
        )
    return SimModel(net, options["preprocess"], options["name"], spec.text, {"source": "file"})


def _why_unreadable(path: Path, error: Exception) -> str:
    """What is wrong with a file torch could not load, in words: a cut-short archive gave torch's "[Errno 22] Invalid
    argument"."""
    try:
        with Path(path).expanduser().open("rb") as handle:
            magic = handle.read(2)
    except OSError as opened:
        return opened.strerror or type(opened).__name__
    if magic == b"PK" and not zipfile.is_zipfile(path):
        return "the file is cut short: a zip archive without its end, as an interrupted copy or download leaves it"
    return one_line(error)[:200]


def _is_torchscript(path: Path) -> bool:
    """A torch.jit.save archive: a zip with compiled code (torch.save's zips hold only data.pkl and tensors)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def _load_state(net: torch.nn.Module, checkpoint: str, spec: Spec) -> None:
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise ArchsimError(
            f"cannot read checkpoint {checkpoint} ({_why_unreadable(Path(checkpoint), error)}); it must be a "
            f"torch.save'd state dict"
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
        state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
        raise ArchsimError(
            f"checkpoint {checkpoint} does not fit {spec.text.split(',')[0]} ({detail}); check the model name and "
            f"num_classes="
        ) from None
