"""The default engine: every task in this process, one after another."""

from __future__ import annotations

from typing import Any, Sequence

from tqdm.auto import tqdm

from archsim.cache import CacheStore
from archsim.engines.base import Task


class LocalEngine:
    """Runs each task here on ``device`` (``cpu`` or ``cuda[:N]``)."""

    name = "local"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def map(self, task: Task, jobs: Sequence[tuple], store: CacheStore, desc: str, labels: Sequence[str]) -> list[Any]:
        return [task(self.device, store, *job) for job in tqdm(jobs, desc=desc, unit="model", disable=None)]

    def close(self) -> None:
        pass
