"""Model sources for ``timm:``, ``torchvision:`` and ``file:`` specs."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import urllib.parse
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import timm
import torch
import torchvision

from archsim.cache import CacheStore
from archsim.data.views import CROP_MODES, INTERPOLATIONS, timm_scale_size
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
    """Preprocessing and view from timm's resolved data config of ``net``: its input size, mean, std, interpolation,
    and the resize and crop of ``timm.data.create_transform`` for evaluation (``crop_pct``, ``crop_mode``)."""
    return preprocess_of_config(timm.data.resolve_data_config(model=net))


def preprocess_of_config(cfg: dict[str, Any]) -> Preprocess:
    """A :class:`Preprocess` from a timm data config (``input_size``, ``mean``, ``std`` and optionally
    ``interpolation``, ``crop_pct``, ``crop_mode``), resized and cropped as timm's evaluation transform does."""
    interpolation = cfg.get("interpolation") or "bicubic"
    crop_pct = cfg.get("crop_pct") or timm.data.DEFAULT_CROP_PCT  # timm's own default where a config has none
    crop_mode = cfg.get("crop_mode") or "center"
    size = tuple(cfg["input_size"])
    return Preprocess(
        size,
        cfg["mean"],
        cfg["std"],
        interpolation if interpolation in INTERPOLATIONS else "bicubic",  # "random" is a training choice
        resize=timm_scale_size(size[1:], crop_pct),
        crop_mode=crop_mode if crop_mode in CROP_MODES else "center",  # timm crops in the centre for any other
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
    options = _weights_options(spec, "num_classes", "in_chans")
    crop_pct = spec.take_floats("crop_pct")
    if crop_pct is not None and (len(crop_pct) != 1 or not 0 < crop_pct[0] <= 1):
        raise ArchsimError(f"crop_pct in {spec.text!r} is one number in (0, 1], e.g. crop_pct=0.875")
    options["crop_pct"] = crop_pct[0] if crop_pct else None
    return options


EXTRA_DATA = re.compile(r"in21k|in22k|in12k|laion|openai|ig1b|_ig|yfcc|jft|ns_|swsl|ssl|dino|datacomp|cc12m|lvd|m38m")
"""Pretrained tags of weights that saw more than ImageNet-1k (ImageNet-21k/12k, LAION, Instagram, JFT, ...)."""


def check_timm_spec(spec: Spec) -> str:
    """:func:`timm_options` before a run, with a warning where an untagged name loads weights trained on extra data
    (timm 1.0's default for many names: ``convnext_tiny`` is ``convnext_tiny.in12k_ft_in1k``)."""
    options = timm_options(spec)
    if options["pretrained"] and "." not in spec.target:
        tag = getattr(timm.models.get_pretrained_cfg(spec.target), "tag", None) or ""
        if EXTRA_DATA.search(tag):
            arch = timm.models.get_arch_name(spec.target)
            in1k = [
                t for t in timm.models.get_arch_pretrained_cfgs(arch) if t.endswith("in1k") and not EXTRA_DATA.search(t)
            ]
            instead = f"timm:{in1k[0]}" if in1k else "no ImageNet-1k-only tag exists"
            warnings.warn(
                f"timm:{spec.target} loads {arch}.{tag}, trained on more than ImageNet-1k; name a tag to choose "
                f"({instead})",
                stacklevel=2,
            )
    return options["name"]


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


@register_source("timm", check=check_timm_spec)
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
    config = timm.data.resolve_data_config(model=net)
    if options["crop_pct"] is not None:
        config["crop_pct"] = options["crop_pct"]
    # timm's pretrained tag names the recipe the hub weights were trained with (a1_in1k, tv_in1k, tf_adv_in1k).
    return SimModel(
        net,
        preprocess_of_config(config),
        options["name"],
        spec.text,
        {
            "source": "timm",
            **_training(options, net.pretrained_cfg.get("tag")),
            **timm_provenance(net, options),
        },
    )


def timm_provenance(net: torch.nn.Module, options: dict[str, Any]) -> dict[str, str]:
    """Which weights a timm model holds: its resolved tag (``arch.tag``), hub id, and the SHA-256 of the weights file
    it loaded (the hub's cached file, or ``checkpoint=``; empty for random weights)."""
    cfg = net.pretrained_cfg
    tag = f"{cfg.get('architecture') or options['name']}.{cfg['tag']}" if cfg.get("tag") else ""
    file = options["checkpoint"]
    if options["pretrained"]:
        file = _timm_weights_file(cfg)
    return {
        "weights_tag": tag,
        "hub_id": cfg.get("hf_hub_id") or cfg.get("url") or "",
        "weights_sha256": file_sha256(file),
    }


def _timm_weights_file(cfg: dict[str, Any]) -> str | None:
    """The local file timm loaded pretrained weights from (the hub's cache, or torch.hub's for a URL)."""
    import huggingface_hub

    if cfg.get("hf_hub_id"):
        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else ("model.safetensors", "pytorch_model.bin")
        for name in names:
            found = huggingface_hub.try_to_load_from_cache(cfg["hf_hub_id"], name)
            if isinstance(found, str):
                return found
    if cfg.get("url"):
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlsplit(cfg["url"]).path).name
        return str(cached) if cached.is_file() else None
    return None


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | None) -> str:
    """SHA-256 of a file's bytes ('' for none), once per file, size and modification time in this process."""
    if path is None:
        return ""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        with open(path, "rb") as handle:
            _FILE_HASHES[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return _FILE_HASHES[key]


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
    preset = weights.transforms()  # torchvision's ImageClassification: shorter side to resize_size, centre crop
    preprocess = Preprocess(
        (3, *preset.crop_size * (2 if len(preset.crop_size) == 1 else 1)),
        preset.mean,
        preset.std,
        preset.interpolation.value,
        resize=preset.resize_size * (2 if len(preset.resize_size) == 1 else 1),
    )
    provenance = {
        "weights_tag": f"{spec.target}.{weights.name}" if options["pretrained"] else "",
        "hub_id": weights.url if options["pretrained"] else "",
        "weights_sha256": file_sha256(str(cached) if options["pretrained"] else options["checkpoint"]),
    }
    return SimModel(
        net,
        preprocess,
        options["name"],
        spec.text,
        {"source": "torchvision", **_training(options, weights.name), **provenance},
    )


def _training(options: dict[str, Any], hub_recipe: str | None) -> dict[str, Any]:
    """Training regime and seed for the training-vs-architecture table (docs/method.md#analysis): the hub weights'
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
    crop_pct = spec.take_floats("crop_pct")
    if crop_pct is not None and len(crop_pct) != 1:
        raise ArchsimError(f"crop_pct in {spec.text!r} is one number, e.g. crop_pct=0.875")
    crop_pct = crop_pct[0] if crop_pct else None
    crop_mode = spec.take("crop_mode", "center")
    if size is not None and len(size) != 3:
        raise ArchsimError(f"input_size in {spec.text!r} must be C:H:W, e.g. 3:224:224")
    if crop_pct is not None and (size is None or not 0 < crop_pct <= 1):
        raise ArchsimError(f"crop_pct in {spec.text!r} must lie in (0, 1], with input_size=C:H:W")
    try:
        resize = timm_scale_size(tuple(int(v) for v in size[1:]), crop_pct) if crop_pct is not None else None
        preprocess = Preprocess(size, mean, std, interpolation, resize=resize, crop_mode=crop_mode)
    except ValueError as error:
        raise ArchsimError(f"bad preprocessing options in {spec.text!r}: {error}") from None
    return {"path": path, "preprocess": preprocess, "name": path.stem}


@register_source("file", check=lambda spec: file_options(spec)["name"])
def file_model(spec: Spec, cache: CacheStore) -> SimModel:
    """``file:PATH``: a TorchScript file or a pickled ``nn.Module`` (``torch.save(model)``).

    Options ``input_size=C:H:W`` (default: no resizing), ``mean=..``/``std=..``
    (colon-separated; default 0 and 1, i.e. the module takes [0, 1] pixels),
    ``interpolation=bilinear|bicubic|...``, and the view of image files as timm
    states it: ``crop_pct=P`` (resize to ``floor(side / P)``, then crop; default: no
    crop, the image resized whole) and ``crop_mode=center|squash|border``.
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
