"""What the benchmark scripts share: the machine line they print, the timing, and a cache holding trained weights
only."""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from archsim.cache import CacheStore, default_cache_root
from archsim.models import create_model, train_zoo


def machine() -> str:
    return (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def interleaved_best(
    repeats: int, contestants: dict[str, Callable[[], object]], sync: Callable[[], None]
) -> dict[str, float]:
    """The best of ``repeats`` timings of each contestant, timed in rounds that run each once.

    Interleaved, not one after the other: a slow moment of a shared machine (this VM
    varies by 5-15 % over minutes) then falls on every contestant of a round rather
    than on whichever ran during it, so the ratios compare like with like.
    """
    for fn in contestants.values():
        fn()  # warm-up: allocator, kernels, cuDNN algorithm search, compilation
        sync()
    times: dict[str, list[float]] = {label: [] for label in contestants}
    labels = list(contestants)
    for round_ in range(repeats):
        # a different one first each round
        for label in labels[round_ % len(labels) :] + labels[: round_ % len(labels)]:
            started = time.perf_counter()
            contestants[label]()
            sync()
            times[label].append(time.perf_counter() - started)
    return {label: min(t) for label, t in times.items()}


def best_of(repeats: int, fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """The best of ``repeats`` timings of ``fn`` after one warm-up."""
    return interleaved_best(repeats, {"": fn}, sync)[""]


def weights_only_cache(folder: Path, specs: list[str]) -> Path:
    """A cache in ``folder`` with the zoo weights of the user's cache, plus any it lacked
    (trained here, before any timing); no adversarial set or prediction."""
    if (default_cache_root() / "zoo").is_dir():
        shutil.copytree(default_cache_root() / "zoo", folder / "zoo")
    store = CacheStore(folder)
    train_zoo(specs, store)
    for spec in specs:
        create_model(spec, cache=store)
    return folder
