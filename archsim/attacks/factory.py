"""Attacks from their specs: ``NAME[,key=value...]`` for archsim's and plugins' attacks, ``torchattacks:NAME[,...]``
for torchattacks'; specs split by :func:`archsim.specs.parse_attack_spec`, as model and data specs are."""

from __future__ import annotations

import inspect
import typing
import warnings
from typing import Any

from archsim import plugins
from archsim.attacks.apgd import APGD
from archsim.attacks.base import Attack
from archsim.attacks.external import TorchattacksAttack, torchattacks_options
from archsim.attacks.fgsm import FGSM
from archsim.attacks.lowfreq import LowFrequencyPGD
from archsim.attacks.mifgsm import MIFGSM
from archsim.attacks.pgd import PGD
from archsim.attacks.vmifgsm import VMIFGSM
from archsim.errors import ArchsimError, ParameterError
from archsim.held import held, hold
from archsim.plugins import PluginWarning, load_plugins
from archsim.specs import Spec, parse_attack_spec, parse_bool, spec_value

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (PGD, FGSM, MIFGSM, VMIFGSM, APGD, LowFrequencyPGD)}

# archsim's options of a torchattacks attack -> torchattacks' option and its value from archsim's (and eps).
TORCHATTACKS_NAMES = {
    "steps": ("steps", lambda value, eps: int(value)),
    "random_start": ("random_start", lambda value, eps: bool(value)),
    "rel_step": ("alpha", lambda value, eps: value * eps),
}


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


def option_value(value: str, kinds: tuple[type, ...]) -> Any:
    """A spec option's text as the first of bool, int, str or float that ``kinds`` admits (float when it names none
    of them); ValueError when it is not one."""
    if bool in kinds:
        if parse_bool(value) is None:
            raise ValueError(value)
        return parse_bool(value)
    if int in kinds:
        return int(value)
    return value if str in kinds else float(value)


def kind_words(kinds: tuple[type, ...]) -> str:
    return (
        "true or false"
        if bool in kinds
        else "a whole number"
        if int in kinds
        else "text"
        if str in kinds
        else "a number"
    )


def converted(
    spec: Spec, attack: str, accepted: dict[str, inspect.Parameter], hints: dict[str, Any], untyped: type
) -> dict:
    """The spec's options converted by the type each has in the attack's signature (its annotation, else its
    default's type; ``untyped`` where neither says); an option the attack does not take is refused, naming those it
    does."""
    given = {}
    for key, value in spec.options.items():
        if key not in accepted:
            raise ArchsimError(f"{attack} has no option {key!r}; it takes: {', '.join(accepted) or 'eps only'}")
        default = accepted[key].default
        kind = hints.get(key, untyped if default is inspect.Parameter.empty or default is None else type(default))
        kinds = typing.get_args(kind) or (kind,)
        try:
            given[key] = option_value(value, kinds)
        except ValueError:
            raise ArchsimError(f"option {key}={value!r} of {attack} must be {kind_words(kinds)}") from None
    return given


def create_attack(spec: str, **options: Any) -> Attack:
    """An attack from ``NAME[,key=value...]`` plus keyword options (``eps``, ``steps``...); ``torchattacks:NAME[,...]``
    wraps torchattacks' attack of that name (:class:`~archsim.attacks.external.TorchattacksAttack`).

    Options the attack does not take are refused, naming those it does.
    """
    parsed = parse_attack_spec(spec)
    if parsed.scheme == "torchattacks":
        return torchattacks_attack(parsed, dict(options))
    name = parsed.target
    parsed.options = {key.replace("-", "_"): value for key, value in parsed.options.items()}
    known = all_attacks()
    if name not in known:
        held_attack = held_matching(name, parsed, options)
        if held_attack is not None:
            return held_attack
        raise ArchsimError(f"unknown attack {name!r}; choose from {', '.join(known)}")
    accepted = attack_options(name)
    given = converted(parsed, f"attack {name}", accepted, typing.get_type_hints(known[name].__init__), float)
    for key, value in options.items():
        if key != "eps" and key not in accepted:
            raise ParameterError(key, f"attack {name} takes no {{}}; its options: {', '.join(accepted) or 'eps only'}")
        given.setdefault(key, value)
    return known[name](**given)


def held_matching(name: str, spec: Spec, options: dict[str, Any]) -> Attack | None:
    """The attack held as ``name`` (:func:`hold_attack`) if its settings are those asked for, else None."""
    attack = held(f"attack:{name}")
    if attack is None:
        return None
    config = {k: spec_value(v) for k, v in attack.config().items()}
    asked = dict(spec.options) | {k: spec_value(v) for k, v in options.items()}
    return attack if all(config.get(k) == v for k, v in asked.items()) else None


def torchattacks_attack(spec: Spec, options: dict[str, Any]) -> TorchattacksAttack:
    """``torchattacks:NAME``: options converted by the types of torchattacks' defaults; archsim's ``steps``,
    ``rel_step`` and ``random_start`` map to torchattacks' ``steps``, ``alpha`` (= rel_step * eps) and
    ``random_start``. Two options are archsim's: ``batch`` (the images attacked at a time, on which the result
    depends) and ``torchattacks_version`` (a run's record: it resumes only with that version)."""
    attack = spec.target
    accepted = torchattacks_options(attack)
    version = spec.take("torchattacks_version")
    batch = spec.take("batch")
    given = converted(spec, f"torchattacks.{attack}", accepted, {}, str)
    if batch is not None:
        if not batch.isdigit() or int(batch) < 1:
            raise ArchsimError(f"option batch={batch!r} of torchattacks:{attack} must be a whole number of 1 or more")
        given["batch"] = int(batch)
    eps = options.pop("eps")
    for ours, (theirs, convert) in TORCHATTACKS_NAMES.items():
        if ours in options:
            if theirs not in accepted:
                raise ParameterError(
                    ours, f"torchattacks.{attack} takes no {{}}; its options: {', '.join(accepted) or 'eps only'}"
                )
            given.setdefault(theirs, convert(options.pop(ours), eps))
    made = TorchattacksAttack(eps, attack, **given)
    if version is not None and version != made.version:
        raise ArchsimError(
            f"the run attacked with torchattacks {version} and {made.version} is installed; install "
            f"torchattacks=={version}"
        )
    return made
