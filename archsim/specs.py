"""Parsing of the ``SCHEME:TARGET[,key=value...]`` strings users type for models and data, and of the
other settings the CLI checks while it parses its options (so that a usage error never waits for torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from archsim import plugins
from archsim.errors import ArchsimError, ParameterError
from archsim.params import check
from archsim.plugins import plugin_names

BOOLEAN_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}
"""The words a spec option may give a boolean as, in any case."""


def parse_bool(value: str) -> bool | None:
    """``value`` as a boolean (:data:`BOOLEAN_WORDS`), or None when it is not one."""
    return BOOLEAN_WORDS.get(value.strip().lower())


@dataclass
class Spec:
    """A parsed spec; options are consumed with the ``take_*`` methods.

    Examples
    --------
    >>> s = parse_spec("timm:resnet50,pretrained=false")
    >>> s.scheme, s.target, s.take_bool("pretrained", True)
    ('timm', 'resnet50', False)
    """

    text: str
    scheme: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    def take(self, key: str, default: str | None = None) -> str | None:
        return self.options.pop(key, default)

    def take_bool(self, key: str, default: bool) -> bool:
        value = self.options.pop(key, None)
        if value is None:
            return default
        if parse_bool(value) is not None:
            return parse_bool(value)
        raise ArchsimError(f"option {key}={value!r} in {self.text!r} is not a boolean; use {key}=true or {key}=false")

    def take_int(self, key: str, default: int | None = None, minimum: int = 1) -> int | None:
        value = self.options.pop(key, None)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ArchsimError(f"option {key}={value!r} in {self.text!r} is not a whole number") from None
        if number < minimum:
            raise ArchsimError(
                f"option {key}={value!r} in {self.text!r} must be "
                f"{'positive' if minimum == 1 else f'at least {minimum}'}"
            )
        return number

    def take_floats(self, key: str) -> tuple[float, ...] | None:
        """A colon-separated list of numbers such as ``mean=0.485:0.456:0.406``."""
        value = self.options.pop(key, None)
        if value is None:
            return None
        try:
            return tuple(float(part) for part in value.split(":"))
        except ValueError:
            raise ArchsimError(f"option {key}={value!r} in {self.text!r} must be numbers separated by ':'") from None

    def finish(self) -> None:
        """Reject options nobody consumed."""
        if self.options:
            names = ", ".join(sorted(self.options))
            raise ArchsimError(
                f"unknown option(s) {names} in {self.text!r}; see `archsim run --help` for the spec options"
            )


def spec_value(value: object) -> str:
    """A setting as a spec writes it (``key=value``): booleans in lower case, as ``--random-start false``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_spec(text: str, schemes: tuple[str, ...], bare: tuple[str, ...] = ()) -> Spec:
    """Split ``SCHEME:TARGET[,key=value...]``; ``schemes`` lists the accepted schemes, ``bare`` those written
    without a target (``digits``), as error messages show them."""
    text = text.strip()
    if not text:
        raise ArchsimError("empty spec; write SCHEME:NAME, e.g. " + f"{schemes[0]}:...")
    scheme, sep, rest = text.partition(":")
    if not sep:
        scheme, rest = text, ""
    if scheme not in schemes:
        forms = ", ".join(s if s in bare else f"{s}:..." for s in schemes if s not in WRITTEN_BY_ARCHSIM)
        raise ArchsimError(f"unknown scheme {scheme!r} in {text!r}; use one of: {forms}")
    target, *pairs = rest.split(",") if rest else [""]
    options = parse_options(pairs, text)
    return Spec(text=text, scheme=scheme, target=target.strip(), options=options)


def parse_options(pairs: list[str], text: str) -> dict[str, str]:
    """The ``key=value`` parts of a spec (``text``, for the error) as a dict, keys and values stripped; a later
    key replaces an earlier one."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ArchsimError(f"option {pair!r} in {text!r} is not key=value")
        options[key.strip()] = value.strip()
    return options


ATTACK_SCHEMES = ("torchattacks",)
"""Attack specs are ``NAME[,key=value...]`` (archsim's or a plugin's attack) or ``torchattacks:NAME[,...]``."""


def parse_attack_spec(text: str) -> Spec:
    """Split an attack spec: the scheme (``torchattacks``, or ``""`` for archsim's and plugins' attacks), the attack's
    name, and its options (:func:`parse_options`), as :func:`parse_spec` splits model and data specs."""
    text = text.strip()
    name, *pairs = text.split(",")
    scheme, sep, target = name.strip().partition(":")
    if not sep or scheme not in ATTACK_SCHEMES:
        scheme, target = "", name.strip()
    return Spec(text=text, scheme=scheme, target=target.strip(), options=parse_options(pairs, text))


def model_list(chunks: tuple[str, ...] | list[str]) -> list[str]:
    """The model specs of ``--models`` values: each value is split at white space, and ``@FILE`` stands
    for the specs in FILE, one per line (so a path in a spec may hold spaces), ``#`` starting a comment.

    Examples
    --------
    >>> model_list(["zoo:vit zoo:mixer", "timm:resnet50"])
    ['zoo:vit', 'zoo:mixer', 'timm:resnet50']
    """
    specs: list[str] = []
    for token in (part for chunk in chunks for part in chunk.split()):
        if not token.startswith("@"):
            specs.append(token)
            continue
        path = Path(token[1:]).expanduser()
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark (Windows editors) is no spec
        except (OSError, UnicodeDecodeError) as error:
            reason = (
                "does not exist" if isinstance(error, FileNotFoundError) else f"cannot be read ({type(error).__name__})"
            )
            raise ParameterError(
                "models", f"model list {path} (from {{}} {token}) {reason}; give a text file of specs, one per line"
            ) from None
        specs.extend(line for line in (raw.split("#", 1)[0].strip() for raw in lines) if line)
    return specs


def check_batch_size(value: int | str) -> int | str:
    """A positive whole number or ``"auto"``, else a one-line error."""
    return check("batch_size", value)


WRITTEN_BY_ARCHSIM = ("object", "memory")
"""Schemes of specs archsim writes for objects given in Python (never typed, so never suggested)."""
DATA_SCHEMES = ("digits", "imagefolder", "imagenet-val", "npz", "memory")
MODEL_SCHEMES = ("zoo", "timm", "torchvision", "file", "object")
"""The schemes of the registry (:mod:`archsim.models.registry`); here too, so that a spec is checked without torch."""
ZOO_NAMES = (
    "resnet-s0",
    "resnet-s1",
    "resnet-s2",
    "resnet-ls",
    "resnet-aug",
    "seresnet",
    "vit",
    "mixer",
    "convnext",
    "mobilenetv3",
    "mobilevit",
    "resnet-adv",
    "resnet-adv-s1",
    "resnet-adv-s2",
)
"""The embedded zoo's models (:data:`archsim.models.ZOO`, whose module imports timm; a test keeps the two equal)."""


def check_eps(eps: float) -> float:
    """An attack radius in (0, 1] pixel units, else a one-line error."""
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 < eps <= 1):
        raise ParameterError("eps", f"must lie in (0, 1] (pixel units, e.g. 0.1 or 4/255=0.0157), got {eps}")
    return float(eps)


LEVELS = 255
"""Adversarial images are uint8: a radius is a whole number of 1/255 levels."""


def whole_levels(eps: float) -> tuple[float, str | None]:
    """``eps`` rounded to the nearest whole number of 1/255 levels, and a one-line note where that changed it (None
    where it was whole already); a one-line error for a radius below half a level, which rounds to none."""
    levels = eps * LEVELS
    nearest = round(levels)
    if abs(levels - nearest) < 1e-6:
        return eps, None
    if nearest < 1:
        raise ParameterError(
            "eps", f"{eps} is {levels:.2f} of a 1/255 level, which rounds to none; give at least 1/255"
        )
    return nearest / LEVELS, (
        f"eps {eps} is {levels:.2f} levels of 1/255 and adversarial images are whole levels: rounded to the nearest, "
        f"{nearest}/255 = {nearest / LEVELS:.6f} (give eps as N/255 to choose)"
    )


def quick_check_run(specs: list[str], data: str, eps: float | None) -> None:
    """What a run can refuse without torch or timm (a mistyped scheme, zoo name, data scheme or eps), in well under a
    second; everything else is checked where the model or data is loaded, before any work."""
    if eps is not None:
        check_eps(eps)
    parse_spec(data, DATA_SCHEMES, bare=("digits",))
    schemes = MODEL_SCHEMES + plugin_names(plugins.SOURCES)
    for text in specs:
        spec = parse_spec(text, schemes)
        if spec.scheme == "zoo" and spec.target not in ZOO_NAMES:
            raise ArchsimError(f"unknown zoo model {spec.target!r}; choose from {', '.join(ZOO_NAMES)}")


def check_out_folder(out: Path, parameter: str = "out") -> Path:
    """``out`` if it is a folder or can be made one (no file in its place or above it), else a one-line error
    naming ``parameter``: asked before any work, so a wrong output path does not fail after the results are
    computed and shown."""
    if out.exists() and not out.is_dir():
        raise ParameterError(parameter, f"{{}} {out} is a file; choose a folder")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ParameterError(parameter, f"cannot make {{}} {out}: {blocker} is a file; choose a folder")
    return out


def check_seed(seed: int) -> int:
    """A whole number from 0 to 2^32 - 1, else a one-line error (numpy and K-means refuse others, mid-run)."""
    return check("seed", seed)


def check_max_resident(value: int | str) -> int | str:
    """A positive whole number of models or ``"auto"``, else a one-line error."""
    return check("max_resident", value)
