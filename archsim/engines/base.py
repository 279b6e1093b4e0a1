"""What an engine does: run the tasks of one stage and return their results in order."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Protocol, Sequence

from tqdm.auto import tqdm

from archsim.cache import CacheStore
from archsim.progress import duration

Task = Callable[..., Any]
"""``task(device, store, *job)``: one model's work in a stage, reading and writing ``store``."""


class Engine(Protocol):
    name: str
    device: str
    """Where the tasks compute: ``cpu``, ``cuda`` or ``cuda:N``."""
    slots: int
    """How many tasks run at once (GPUs of a Ray cluster); a stage splits its work into this many groups."""

    def map(
        self,
        task: Task,
        jobs: Sequence[tuple],
        store: CacheStore,
        desc: str,
        labels: Sequence[str],
        report_all: bool = False,
    ) -> list[Any]:
        """``task(device, store, *job)`` for every job; results in the order of ``jobs``.

        Cache hits, misses and entries used by the tasks are added to ``store``'s
        counters, as if the tasks had run on it here. ``labels`` name the jobs in
        progress bars and errors; off a terminal a line reports each job that computed
        something, or every job with ``report_all`` (work that is never cached).
        """
        ...

    def close(self) -> None:
        """Release what the engine holds (a cluster connection it opened)."""
        ...


class TaskProgress:
    """Progress over the tasks of a stage: a bar on a terminal. Where stderr is not one (a batch
    job's log), where a bar would show nothing for hours, a line per task that computed something;
    tasks answered from the cache alone (every rerun, every analysis of a finished run) stay silent.
    """

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.finished, self.start = total, desc, 0, time.monotonic()
        self.last = self.start
        self.bar = tqdm(total=total, desc=desc, unit="model") if sys.stderr.isatty() else None

    def done(self, label: str, computed: bool) -> None:
        """One more task finished: ``label`` names it, ``computed`` says whether it missed the cache."""
        self.finished += 1
        now = time.monotonic()
        took, self.last = now - self.last, now
        if self.bar is not None:
            self.bar.update()
        elif computed:
            elapsed = now - self.start
            left = self.total - self.finished
            eta = f", about {duration(elapsed / self.finished * left)} left" if left else ""
            print(
                f"{self.desc}: {self.finished}/{self.total} {label} ({took:.1f} s; {duration(elapsed)} in all{eta})",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> TaskProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
