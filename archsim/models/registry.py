"""One registry from spec strings to :class:`SimModel` (mirrors ``timm.create_model``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from archsim import plugins
from archsim.cache import CacheStore
from archsim.errors import ArchsimError
from archsim.models.wrapper import SimModel
from archsim.plugins import load_plugins, plugin_names
from archsim.specs import Spec, parse_spec

ModelSource = Callable[[Spec, CacheStore], SimModel]
SpecCheck = Callable[[Spec], str]
"""Takes and checks a spec's options as its source would, without building anything; returns the model's name."""
_SOURCES: dict[str, ModelSource] = {}
_CHECKS: dict[str, SpecCheck] = {}


def register_source(scheme: str, check: SpecCheck | None = None) -> Callable[[ModelSource], ModelSource]:
    """Register the loader of ``scheme:`` specs, and ``check``, which :func:`check_model_specs`
    runs before a run builds anything (without one, only the scheme is checked up front)."""

    def decorate(fn: ModelSource) -> ModelSource:
        _SOURCES[scheme] = fn
        if check is not None:
            _CHECKS[scheme] = check
        return fn

    return decorate


def model_schemes() -> tuple[str, ...]:
    """The schemes of model specs: archsim's and those plugins declare (group ``archsim.sources``)."""
    return tuple(_SOURCES) + tuple(name for name in plugin_names(plugins.SOURCES) if name not in _SOURCES)


def _source(scheme: str) -> ModelSource:
    if scheme in _SOURCES:
        return _SOURCES[scheme]
    loaded = load_plugins(plugins.SOURCES)
    if scheme not in loaded:
        raise ArchsimError(f"the plugin of model scheme {scheme!r} failed to load (see the warning); fix or remove it")
    return loaded[scheme]


def _check(scheme: str) -> SpecCheck | None:
    if scheme in _SOURCES:
        return _CHECKS.get(scheme)
    return getattr(_source(scheme), "check", None)  # a plugin's source may carry its own check


def create_model(spec: str, cache: CacheStore | None = None, device: str = "cpu") -> SimModel:
    """Build the wrapped, frozen model a spec names.

    Parameters
    ----------
    spec : str
        ``zoo:NAME[,epoch=E]``, ``timm:NAME[,pretrained=false][,checkpoint=PATH][,num_classes=K][,init_seed=S]``,
        ``torchvision:NAME[,pretrained=false][,checkpoint=PATH][,init_seed=S]`` or
        ``file:PATH[,input_size=C:H:W][,mean=..][,std=..]``; every scheme also
        takes ``name=DISPLAY``, and all but ``zoo:`` ``regime=LABEL``, ``hparams=LABEL`` and ``seed=N``
        (:func:`training_labels`).
    cache : CacheStore, optional
        Where the embedded zoo keeps its trained weights.
    device : str
        Torch device to move the model to.
    """
    parsed = parse_spec(spec, model_schemes())
    display = take_name(parsed)
    labels = training_labels(parsed)
    model = _source(parsed.scheme)(parsed, cache or CacheStore())
    parsed.finish()
    if display is not None:
        model.name = display
    model.info.update(labels)
    return model.to(device)


def take_name(spec: Spec) -> str | None:
    """``name=DISPLAY`` taken from ``spec``, checked: a model's name becomes a file or folder name (``RUN/added/NAME``,
    ``RUN/distill/NAME``), so it may not be empty, hold a path separator or control character, or be ``.``/``..``."""
    value = spec.take("name")
    if value is None:
        return None
    why = name_problem(value)
    if why:
        raise ArchsimError(
            f"name={value!r} in {spec.text!r} cannot name a model ({why}); give a plain name, e.g. name=my-model"
        )
    return value


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot name a model (it becomes a file or folder name), or None."""
    return (
        "it is empty"
        if not value.strip()
        else "it starts or ends with a space"
        if value != value.strip()
        else "it holds a path separator"
        if "/" in value or "\\" in value
        else "it is . or .."
        if value in (".", "..")
        else "it holds a control character"
        if any(ord(c) < 32 for c in value)
        else "it is longer than 120 characters"
        if len(value) > 120
        else None
    )


def training_labels(spec: Spec) -> dict[str, str | int]:
    """``regime=LABEL``, ``hparams=LABEL`` and ``seed=N``, taken from ``spec``: how the user's weights were trained
    (the training regime, its hyper-parameters and the seed), for the
    training-vs-architecture table (docs/method.md#analysis), where a checkpoint's training is otherwise unknown.
    They change no weights (``init_seed`` draws random ones); zoo models know their own."""
    labels = {
        key: value
        for key, value in (
            ("regime", spec.take("regime")),
            ("hparams", spec.take("hparams")),
            ("seed", spec.take_int("seed", minimum=0)),
        )
        if value is not None
    }
    if labels and spec.scheme == "zoo":
        raise ArchsimError(
            f"{' and '.join(f'{k}=' for k in labels)} in {spec.text!r}: a zoo model's regime, hyper-parameters and "
            f"seed are its own (see archsim zoo)"
        )
    return labels


def check_model_specs(specs: list[str]) -> None:
    """Refuse bad model specs before any model is built or attacked: an unknown scheme, model,
    option or file, or two models of one name (a run of many models would otherwise fail at the
    first bad one, after attacking those before it)."""
    names: dict[str, tuple[str, str]] = {}  # casefolded name -> (name, spec): names differing in case clash as folders
    for text in specs:
        spec = parse_spec(text, model_schemes())
        display = take_name(spec)
        training_labels(spec)
        check = _check(spec.scheme)
        name = display
        if check is not None:
            own = check(spec)
            spec.finish()
            name = display or own
        if name is None:
            continue
        if name.casefold() in names:
            other, other_text = names[name.casefold()]
            alike = f"{other!r} and {name!r}" if other != name else repr(name)
            raise ArchsimError(
                f"two models are named {alike} ({other_text} and {text}); give one a name with ,name=OTHER in its spec"
            )
        names[name.casefold()] = (name, text)


def require_file(spec: Spec, key: str) -> str | None:
    """The path in option ``key``, checked to exist."""
    value = spec.take(key)
    if value is not None and not Path(value).expanduser().is_file():
        raise ArchsimError(f"{key} file {value} does not exist; fix {key}= in {spec.text!r}")
    return value
