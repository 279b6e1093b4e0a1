"""What the benchmark scripts share: the machine line they print, and a cache holding trained weights only."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import torch

from archsim.cache import CacheStore, default_cache_root
from archsim.models import create_model, train_zoo


def machine() -> str:
    return f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


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
