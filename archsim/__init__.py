"""archsim: similarity of neural architectures by adversarial attack transferability (SAT)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The public names load on first use (PEP 562): importing them here would pull in torch
# and timm (5 s on a small machine) for every `archsim --help` and every bad-input error.
_LAZY = {
    "run_sat": "archsim.api",
    "SatRun": "archsim.api",
    "load_data": "archsim.data",
    "create_model": "archsim.models",
}

__all__ = ["run_sat", "SatRun", "load_data", "create_model", "__version__"]

if TYPE_CHECKING:
    from archsim.api import SatRun, run_sat
    from archsim.data import load_data
    from archsim.models import create_model


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'archsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
