"""Where the per-model tasks of a run execute.

``local`` (the default) runs them one after another in this process and needs
nothing beyond archsim; ``ray`` runs each as a Ray task on a cluster (``pip install
'archsim[ray]'``). Both write to the same content-addressed cache, so a run started
on one resumes on the other.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from archsim.engines.base import Engine, Task
from archsim.engines.local import LocalEngine
from archsim.errors import ArchsimError, ParameterError
from archsim.hardware import resolve_device

ENGINES = ("local", "ray")


def create_engine(
    name: str = "local", device: str = "auto", address: str | None = None, cpus_per_task: float = 1
) -> Engine:
    """The engine ``name`` (``local`` or ``ray``).

    Parameters
    ----------
    name : str
        ``local`` or ``ray``.
    device : str
        ``auto``, ``cpu`` or ``cuda[:N]`` (local); under Ray ``auto`` asks one GPU per
        task when the cluster has GPUs, ``cuda`` insists on it and ``cpu`` asks none.
    address : str, optional
        Ray only: ``auto`` (a cluster started on this machine with ``ray start``),
        ``HOST:PORT`` of a head node, or ``ray://HOST:PORT`` (Ray Client); default: a
        new single-node Ray instance on this machine.
    cpus_per_task : float
        Ray only: CPUs each task asks for (on CPU-only clusters, the threads it uses).
    """
    if name == "local":
        if address is not None:
            raise ParameterError("address", "is for --engine ray; drop it or add --engine ray")
        return LocalEngine(resolve_device(device))
    if name == "ray":
        from archsim.engines.ray_cluster import RayEngine

        return RayEngine(address=address, device=device, cpus_per_task=cpus_per_task)
    raise ArchsimError(f"unknown engine {name!r}; use {' or '.join(ENGINES)}")


@contextmanager
def engine_for(
    engine: str | Engine, device: str = "auto", address: str | None = None, cpus_per_task: float = 1
) -> Iterator[Engine]:
    """``engine`` itself if it is an engine (its owner closes it), else a new one closed on exit."""
    if not isinstance(engine, str):
        yield engine
        return
    runner = create_engine(engine, device=device, address=address, cpus_per_task=cpus_per_task)
    try:
        yield runner
    finally:
        runner.close()


__all__ = ["Engine", "Task", "LocalEngine", "create_engine", "engine_for", "ENGINES"]
