"""Any torchattacks attack as the SAT attack: ``torchattacks:NAME[,key=value...]``, behind archsim's call shape."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import torch

from archsim.attacks.base import Attack, NoiseSource
from archsim.errors import ArchsimError, ParameterError

PREFIX = "torchattacks:"
_NOT_OPTIONS = ("self", "model", "eps", "seed", "verbose")
"""Parameters archsim sets itself: the model, the radius (archsim's eps), and the seed (archsim's, per batch)."""


def _library() -> Any:
    try:
        import torchattacks
    except ImportError:
        raise ParameterError(
            "attack", "torchattacks:... needs torchattacks, which is not installed; pip install torchattacks"
        ) from None
    return torchattacks


def torchattacks_options(name: str) -> dict[str, inspect.Parameter]:
    """The options torchattacks' attack ``name`` takes besides the model, eps and seed."""
    library = _library()
    cls = getattr(library, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, library.attack.Attack)):
        known = sorted(
            n
            for n, c in vars(library).items()
            if inspect.isclass(c) and issubclass(c, library.attack.Attack) and n != "Attack"
        )
        raise ArchsimError(f"torchattacks has no attack {name!r}; it has {', '.join(known)}")
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k not in _NOT_OPTIONS}


class TorchattacksAttack(Attack):
    """A torchattacks attack class run on archsim's models and batches.

    The model archsim hands over takes [0, 1] images and normalises inside, so torchattacks
    sees the pixel space it expects; ``eps`` is archsim's (pixel units); options keep
    torchattacks' names and defaults (``alpha``, ``steps``, ``decay``...). torchattacks draws
    its random numbers from torch's global generator: archsim seeds it for every batch from
    the run's seed and the batch's first image, so a run is deterministic and cached like
    any other. Its result depends on how the images are batched (unlike archsim's own
    attacks, whose draws are per image; DI-FGSM, for one, transforms a whole batch alike),
    so it always attacks ``batch`` images at a time, whatever ``--batch-size`` says, and
    ``batch`` is one of its settings. The cache key holds torchattacks' version and every option.
    """

    DEFAULT_BATCH = 32

    def __init__(self, eps: float, attack: str, batch: int = DEFAULT_BATCH, **options: Any) -> None:
        super().__init__(eps)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ParameterError(
                "batch", f"of torchattacks.{attack} must be a whole number of 1 or more, got {batch!r}"
            )
        self.batch = batch
        accepted = torchattacks_options(attack)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ArchsimError(
                f"torchattacks.{attack} has no option {unknown[0]!r}; it takes: {', '.join(accepted) or 'eps only'}"
            )
        self.attack, self.options = attack, dict(sorted(options.items()))
        self.name = PREFIX + attack
        self.version = _library().__version__

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.options, "batch": self.batch, "torchattacks_version": self.version}

    @property
    def fixed_batch(self) -> int:
        return self.batch

    @property
    def uses_noise(self) -> bool:
        return True  # not archsim's draws: the seed of the batch (NoiseSource.seed and the batch's first image)

    def perturb(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource | None
    ) -> torch.Tensor:
        seed = (
            0
            if noise is None
            else int.from_bytes(hashlib.sha256(f"{noise.seed}/{noise.indices.start}".encode()).digest()[:8], "little")
        )
        library = _library()
        attack = getattr(library, self.attack)(model, eps=self.eps, **self.options)
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            try:
                adv = attack(x, y)
            except (RuntimeError, ValueError) as error:  # e.g. TIFGSM's 3-channel kernel on 1-channel digits
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ArchsimError(
                    f"torchattacks.{self.attack} failed on images of shape {tuple(x.shape[1:])} ({first}); "
                    "it may not support them: choose another attack or other data"
                ) from None
        return adv.detach()
