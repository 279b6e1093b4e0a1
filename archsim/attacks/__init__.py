"""Attacks: one class per file behind the :class:`Attack` call shape."""

from __future__ import annotations

import inspect
import typing
import warnings

from archsim import plugins
from archsim.attacks.apgd import APGD
from archsim.attacks.base import Attack, NoiseSource, start_noise, to_uint8
from archsim.attacks.external import PREFIX, TorchattacksAttack, torchattacks_options
from archsim.attacks.fgsm import FGSM
from archsim.attacks.lowfreq import LowFrequencyPGD
from archsim.attacks.mifgsm import MIFGSM
from archsim.attacks.pgd import PGD
from archsim.attacks.vmifgsm import VMIFGSM
from archsim.errors import ArchsimError, ParameterError
from archsim.held import held, hold
from archsim.plugins import PluginWarning, load_plugins
from archsim.specs import spec_value

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (PGD, FGSM, MIFGSM, VMIFGSM, APGD, LowFrequencyPGD)}

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def all_attacks() -> dict[str, type[Attack]]:
    """archsim's attacks and those plugins add (group ``archsim.attacks``: an :class:`Attack` subclass whose
    ``name`` is the entry point's); a plugin that is not such a class is warned about and left out."""
    found = dict(ATTACKS)
    for name, cls in load_plugins(plugins.ATTACKS).items():
        if name in found:
            continue  # archsim's own names are not replaced
        if not (inspect.isclass(cls) and issubclass(cls, Attack)):
            warnings.warn(
                f"archsim plugin attack {name!r} is a {type(cls).__name__}, not an archsim.attacks.Attack subclass; "
                "it is left out",
                PluginWarning,
                stacklevel=2,
            )
            continue
        if cls.name != name:
            cls.name = name  # the name its results are recorded and cached under: the one users type
        found[name] = cls
    return found


def attack_options(name: str) -> dict[str, inspect.Parameter]:
    """The options an attack takes besides ``eps``."""
    cls = all_attacks()[name]
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k not in ("self", "eps")}


def hold_attack(attack: Attack) -> str:
    """Hold an attack given as an object in Python, so that work on its run (``add``, ``measures``) finds it by its
    spec in this process; returns that spec."""
    if not isinstance(attack, Attack):
        raise ParameterError("attack", f"got a {type(attack).__name__}; give a spec string or an Attack instance")
    if not attack.name:
        raise ParameterError("attack", f"{type(attack).__name__} has no name; set the class attribute name")
    hold(f"attack:{attack.name}", attack)
    return attack.name


def _held_attack(name: str, pairs: list[str], options: dict) -> Attack | None:
    """The held attack ``name`` if its settings are those asked for (``pairs``, ``options``), else None."""
    attack = held(f"attack:{name}")
    if attack is None:
        return None
    config = {k: spec_value(v) for k, v in attack.config().items()}
    asked = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    asked.update({k: spec_value(v) for k, v in options.items()})
    return attack if all(config.get(k) == v for k, v in asked.items()) else None


def _convert(name: str, key: str, value: str, parameter: inspect.Parameter):
    hints = typing.get_type_hints(all_attacks()[name].__init__)
    kind = hints.get(key, type(parameter.default))
    kinds = typing.get_args(kind) or (kind,)
    try:
        if bool in kinds:
            if value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ValueError
        if int in kinds:
            return int(value)
        return float(value)
    except ValueError:
        wanted = "true or false" if bool in kinds else "a whole number" if int in kinds else "a number"
        raise ArchsimError(f"option {key}={value!r} of attack {name} must be {wanted}") from None


def _external(name: str, pairs: list[str], spec: str, options: dict) -> Attack:
    """``torchattacks:NAME``: options converted by the types of torchattacks' defaults; archsim's ``steps``,
    ``rel_step`` and ``random_start`` map to torchattacks' ``steps``, ``alpha`` (= rel_step * eps) and
    ``random_start``."""
    attack = name[len(PREFIX) :]
    accepted = torchattacks_options(attack)
    given: dict = {}
    version = None
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ArchsimError(f"attack option {pair!r} in {spec!r} is not key=value")
        key, value = key.strip(), value.strip()
        if key == "torchattacks_version":  # recorded in a run's settings: the run is resumed only with that version
            version = value
            continue
        if key == "batch":  # archsim's: the images attacked at a time, on which the result depends
            if not value.isdigit() or int(value) < 1:
                raise ArchsimError(f"option batch={value!r} of {name} must be a whole number of 1 or more")
            given["batch"] = int(value)
            continue
        if key not in accepted:
            raise ArchsimError(
                f"torchattacks.{attack} has no option {key!r}; it takes: {', '.join(accepted) or 'eps only'}"
            )
        default = accepted[key].default
        kind = type(default) if default is not inspect.Parameter.empty and default is not None else str
        try:
            if kind is bool and value.lower() not in _TRUE | _FALSE:
                raise ValueError(value)
            given[key] = value.lower() in _TRUE if kind is bool else kind(value)
        except ValueError:
            raise ArchsimError(f"option {key}={value!r} of torchattacks.{attack} must be a {kind.__name__}") from None
    eps = options.pop("eps")
    for ours, theirs, convert in (
        ("steps", "steps", int),
        ("random_start", "random_start", bool),
        ("rel_step", "alpha", lambda r: r * eps),
    ):
        if ours in options:
            if theirs not in accepted:
                raise ArchsimError(
                    f"torchattacks.{attack} takes no --{ours.replace('_', '-')}; its options: "
                    f"{', '.join(accepted) or 'eps only'}"
                )
            given.setdefault(theirs, convert(options.pop(ours)))
    made = TorchattacksAttack(eps, attack, **given)
    if version is not None and version != made.version:
        raise ArchsimError(
            f"the run attacked with torchattacks {version} and {made.version} is installed; install "
            f"torchattacks=={version}"
        )
    return made


def create_attack(spec: str, **options) -> Attack:
    """An attack from ``NAME[,key=value...]`` plus keyword options (``eps``, ``steps``...); ``torchattacks:NAME[,...]``
    wraps torchattacks' attack of that name (:class:`~archsim.attacks.external.TorchattacksAttack`).

    Options the attack does not take are refused, naming those it does.
    """
    name, *pairs = [part.strip() for part in spec.split(",")]
    if name.startswith(PREFIX):
        return _external(name, pairs, spec, dict(options))
    known = all_attacks()
    if name not in known:
        held_attack = _held_attack(name, pairs, options)
        if held_attack is not None:
            return held_attack
        raise ArchsimError(f"unknown attack {name!r}; choose from {', '.join(known)}")
    accepted = attack_options(name)
    given = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ArchsimError(f"attack option {pair!r} in {spec!r} is not key=value")
        key = key.strip().replace("-", "_")
        if key not in accepted:
            raise ArchsimError(f"attack {name} has no option {key!r}; it takes: {', '.join(accepted) or 'eps only'}")
        given[key] = _convert(name, key, value.strip(), accepted[key])
    for key, value in options.items():
        if key != "eps" and key not in accepted:
            flag = "--" + key.replace("_", "-")
            raise ArchsimError(f"attack {name} takes no {flag}; its options: {', '.join(accepted) or 'eps only'}")
        given.setdefault(key, value)
    return known[name](**given)


__all__ = [
    "Attack",
    "APGD",
    "FGSM",
    "LowFrequencyPGD",
    "MIFGSM",
    "PGD",
    "VMIFGSM",
    "TorchattacksAttack",
    "ATTACKS",
    "all_attacks",
    "hold_attack",
    "NoiseSource",
    "attack_options",
    "create_attack",
    "start_noise",
    "to_uint8",
]
