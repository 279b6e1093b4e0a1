"""What an engine does: run the tasks of one stage and return their results in order."""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from archsim.cache import CacheStore

Task = Callable[..., Any]
"""``task(device, store, *job)``: one model's work in a stage, reading and writing ``store``."""


class Engine(Protocol):
    name: str
    device: str
    """Where the tasks compute: ``cpu``, ``cuda`` or ``cuda:N``."""

    def map(self, task: Task, jobs: Sequence[tuple], store: CacheStore, desc: str, labels: Sequence[str]) -> list[Any]:
        """``task(device, store, *job)`` for every job; results in the order of ``jobs``.

        Cache hits, misses and entries used by the tasks are added to ``store``'s
        counters, as if the tasks had run on it here. ``labels`` name the jobs in
        progress bars and errors.
        """
        ...

    def close(self) -> None:
        """Release what the engine holds (a cluster connection it opened)."""
        ...
