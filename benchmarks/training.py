"""Training the embedded zoo: side by side (``train_zoo``) against one model after another.

Both train every model from scratch into a fresh cache with the same one-thread
trainer, so they must give the same weights (checked by fingerprint). Also times
the affine augmentation of one training batch: kornia's per-image transforms of
the whole batch against torchvision's RandomAffine called image by image (the
trainer's earlier loop), and the start of a pool of workers that have imported
archsim: spawned (each imports torch and timm) against forked from the fork
server that ``train_side_by_side`` keeps (which imported them once, for the first pool).

    python benchmarks/training.py                          # the 11 zoo models
    python benchmarks/training.py --models resnet-s0 vit mixer --processes 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
import torchvision.transforms.v2 as T
from common import machine

from archsim.cache import CacheStore
from archsim.hardware import usable_cores
from archsim.models import ZOO, create_model, train_zoo
from archsim.models.parallel import worker_context, worker_setup
from archsim.models.train import affine_augmentation
from archsim.models.zoo import zoo_weights


def augmentation(repeats: int) -> None:
    batch = torch.rand(64, 1, 32, 32)
    per_image = T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    batched = affine_augmentation()
    timings = {}
    for name, call in (
        ("torchvision, image by image", lambda: torch.stack([per_image(image) for image in batch])),
        ("kornia, whole batch", lambda: batched(batch)),
    ):
        call()
        started = time.perf_counter()
        for _ in range(repeats):
            call()
        timings[name] = (time.perf_counter() - started) / repeats
        print(f"augment 64 digits, {name:<28} {1000 * timings[name]:6.2f} ms")
    print(f"kornia {timings['torchvision, image by image'] / timings['kornia, whole batch']:.1f}x faster")


def worker_start(processes: int, repeats: int) -> None:
    """Seconds to start and stop a pool of ``processes`` workers (each runs archsim's initializer, so imports
    archsim)."""
    timings = {}
    for name, context in (("spawned", get_context("spawn")), ("from the fork server", worker_context())):
        started = time.perf_counter()
        for _ in range(repeats):
            with ProcessPoolExecutor(
                processes, mp_context=context, initializer=worker_setup, initargs=(os.getpid(), dict(os.environ))
            ) as pool:
                list(pool.map(abs, range(processes)))  # the pool joins every worker, started or not, on leaving
        timings[name] = (time.perf_counter() - started) / repeats
        print(f"start {processes} workers, {name:<22} {timings[name]:6.2f} s")
    print(
        f"fork server {timings['spawned'] / timings['from the fork server']:.0f}x faster (its own start, once per "
        f"process, not counted)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO), metavar="NAME")
    parser.add_argument("--processes", type=int, default=usable_cores())
    parser.add_argument("--repeats", type=int, default=50, help="augmentation timings to average")
    args = parser.parse_args()
    print(f"{machine()}; {len(args.models)} zoo models; side by side in {args.processes} processes")
    augmentation(args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        alone, side = CacheStore(Path(tmp) / "alone"), CacheStore(Path(tmp) / "side")
        started = time.perf_counter()
        for name in args.models:
            zoo_weights(name, alone)
        t_alone = time.perf_counter() - started
        started = time.perf_counter()
        train_zoo([f"zoo:{name}" for name in args.models], side, processes=args.processes)
        t_side = time.perf_counter() - started
        same = all(
            create_model(f"zoo:{n}", cache=alone).fingerprint == create_model(f"zoo:{n}", cache=side).fingerprint
            for n in args.models
        )
    print(
        f"one after another {t_alone:6.1f} s; side by side {t_side:6.1f} s (fork server start included): "
        f"{t_alone / t_side:.2f}x; same weights: {same}"
    )
    worker_start(args.processes, 3)


if __name__ == "__main__":
    main()
