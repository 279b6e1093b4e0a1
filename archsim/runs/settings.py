"""The settings of a run: what its results depend on, recorded in its folder and matched by a rerun that resumes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from archsim.specs import spec_value

# Settings added after the first runs, with the value the runs made before them had: they are recorded only where
# they differ from it, so that those folders still resume.
LATER_SETTINGS = {"precision": "fp32", "keep_going": False, "attack_seeds": 1, "views": "shared"}


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """A run's settings (``config.json``'s and ``settings.json``'s ``"settings"``).

    ``attack`` is the attack's ``config()``: its name, ``eps`` and every option that changes its result.
    """

    models: tuple[str, ...]
    data: str
    n_images: int | None
    attack: Mapping[str, Any] = field(hash=False)
    seed: int
    eps_s: float
    n_boot: int
    precision: str = "fp32"
    keep_going: bool = False
    attack_seeds: int = 1
    views: str = "shared"

    @property
    def eps(self) -> float:
        """The attack's radius in pixel units."""
        return self.attack["eps"]

    @property
    def attack_spec(self) -> str:
        """``NAME,key=value...`` that recreates the run's attack (eps aside)."""
        return attack_spec(self.attack)

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> RunSettings:
        """The settings as a run folder records them (:meth:`to_dict`), from any archsim version's folder."""
        return cls(**{**settings, "models": tuple(settings["models"]), "attack": dict(settings["attack"])})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the later settings only where they differ from the value runs had before them."""
        recorded = asdict(self)
        recorded["models"] = list(self.models)
        recorded["attack"] = dict(self.attack)
        for name, before in LATER_SETTINGS.items():
            if recorded[name] == before:
                del recorded[name]
        return recorded


def attack_spec(config: Mapping[str, Any]) -> str:
    """``NAME,key=value...`` that recreates an attack from its config (eps aside)."""
    return config["name"] + "".join(f",{k}={spec_value(v)}" for k, v in config.items() if k not in ("name", "eps"))
