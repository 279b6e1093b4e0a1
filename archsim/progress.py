"""Progress of a long loop: a bar on a terminal, and where output goes to a log (a batch job, nohup, CI) a plain line
at a steady rate, so the log shows where a long run is without a line per batch."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

LOG_EVERY_S = 30.0
"""Seconds between two progress lines in a log."""


def duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2.5 h``: as a person reads a log."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def steps(
    items: Iterable[T], desc: str, total: int, per_step: int = 1, per_unit: str = "images", unit: str = "batch"
) -> Iterator[T]:
    """Batches ``items`` as they come, with progress: tqdm's bar on a terminal; in a log, every :data:`LOG_EVERY_S`
    seconds ``desc: k/total batches, R per_unit/s, about T left`` (``per_step`` of ``per_unit`` per batch; another
    ``unit`` than a batch, e.g. ``set``, names the items)."""
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False)
        return
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY_S and done < total:
            last = now
            rate = done * per_step / (now - start)
            left = (now - start) / done * (total - done)
            print(
                f"{desc}: {done}/{total} {unit}{'es' if unit.endswith('h') else 's'}, {rate:.1f} {per_unit}/s, about "
                f"{duration(left)} left",
                file=sys.stderr,
                flush=True,
            )
