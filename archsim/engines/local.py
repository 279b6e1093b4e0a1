"""The default engine: every task in this process, one after another."""

from __future__ import annotations

from typing import Any, Sequence

from archsim.cache import CacheStore
from archsim.engines.base import Task, TaskProgress


class LocalEngine:
    """Runs each task here on ``device`` (``cpu`` or ``cuda[:N]``)."""

    name = "local"
    slots = 1
    """Tasks run at once: one, in this process."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def map(
        self,
        task: Task,
        jobs: Sequence[tuple],
        store: CacheStore,
        desc: str,
        labels: Sequence[str],
        report_all: bool = False,
    ) -> list[Any]:
        results = []
        with TaskProgress(len(jobs), desc) as progress:
            for job, label in zip(jobs, labels, strict=True):
                misses = store.misses
                results.append(task(self.device, store, *job))
                progress.done(label, computed=report_all or store.misses > misses)
        return results

    def close(self) -> None:
        pass
