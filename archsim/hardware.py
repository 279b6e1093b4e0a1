"""Which device and how many cores a process computes on: the policy every layer shares."""

from __future__ import annotations

import os

from archsim.errors import ArchsimError, ParameterError


def usable_cores() -> int:
    """Cores this process may run on (its affinity, e.g. a Ray task's share), else all of the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_device(device: str) -> str:
    """``cuda`` for ``auto`` where a CUDA GPU is visible, else ``cpu``; ``cpu`` and ``cuda[:N]`` as given, once
    checked."""
    import torch  # here, not at the top: the CLI validates its flags before torch is loaded

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("device", "cuda asked for but no CUDA GPU is visible; use {} cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ArchsimError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return device
