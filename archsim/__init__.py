"""archsim: similarity of neural architectures by adversarial attack transferability (SAT)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from archsim.version import __version__

# The public names load on first use (PEP 562): importing them here would pull in torch
# and timm (5 s on a small machine) for every `archsim --help` and every bad-input error.
_LAZY = {
    "run_sat": "archsim.runs",
    "load_run": "archsim.runs",
    "SatRun": "archsim.runs",
    "object_spec": "archsim.models",
    "load_data": "archsim.data",
    "create_model": "archsim.models",
}

__all__ = ["run_sat", "load_run", "SatRun", "load_data", "create_model", "object_spec", "__version__"]

if TYPE_CHECKING:
    from archsim.data import load_data
    from archsim.models import create_model, object_spec
    from archsim.runs import SatRun, load_run, run_sat


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'archsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
