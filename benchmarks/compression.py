"""Would storing adversarial sets compressed pay? Bytes saved against decode time, at 224 px.

A PGD set is made on a timm network (random weights: the perturbation's statistics come from
the attack's sign steps and projection, which saturate most pixels at +-eps whatever the weights)
on seeded synthetic images. Two things are compressed with each codec the machine has (zlib and
lzma from the standard library; zstandard and lz4 if installed: ``pip install zstandard lz4``):
the adversarial images as stored today, and the integer perturbation (adversarial minus clean, within
+-eps*255), from which the set is rebuilt by adding the clean images back. For each: the ratio of
sizes, and the decode rate in MB/s of original data on one core, against the rate at which the
disk gives the uncompressed bytes back (read of a file as large as the set, from the page cache
and, with ``--drop-caches`` as root, from the disk).

    python benchmarks/compression.py --n-images 64 --steps 10
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from common import machine

from archsim.api import IMAGENET_EPS
from archsim.attacks import PGD
from archsim.models import create_model


def codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    found: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        "zlib-1": (lambda b: zlib.compress(b, 1), zlib.decompress),
        "zlib-6": (lambda b: zlib.compress(b, 6), zlib.decompress),
        "lzma-0": (lambda b: lzma.compress(b, preset=0), lzma.decompress),
        "bz2-1": (lambda b: bz2.compress(b, 1), bz2.decompress),
    }
    try:
        import zstandard

        for level in (1, 3, 9):
            found[f"zstd-{level}"] = (
                zstandard.ZstdCompressor(level=level).compress,
                zstandard.ZstdDecompressor().decompress,
            )
    except ImportError:
        print("zstandard not installed: pip install zstandard to include it")
    try:
        import lz4.frame

        found["lz4"] = (lz4.frame.compress, lz4.frame.decompress)
    except ImportError:
        print("lz4 not installed: pip install lz4 to include it")
    return found


def disk_read_rate(nbytes: int, drop_caches: bool) -> float:
    """MB/s of a sequential read of a file of ``nbytes`` (from the page cache unless caches are dropped)."""
    with tempfile.NamedTemporaryFile(dir=Path.cwd()) as handle:
        handle.write(os.urandom(nbytes))
        handle.flush()
        os.fsync(handle.fileno())
        if drop_caches:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        started = time.perf_counter()
        with open(handle.name, "rb") as again:
            while again.read(1 << 24):
                pass
        return nbytes / (time.perf_counter() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="timm:resnet18,pretrained=false")
    parser.add_argument("--n-images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps", type=float, default=IMAGENET_EPS)
    parser.add_argument("--drop-caches", action="store_true", help="also time the read from the disk (root only)")
    args = parser.parse_args()
    print(machine())
    rng = np.random.default_rng(0)
    # Smooth synthetic images (noise blurred by upsampling): natural images' neighbouring pixels are alike too.
    coarse = torch.from_numpy(rng.integers(0, 256, (args.n_images, 3, 28, 28)).astype(np.float32))
    clean = torch.nn.functional.interpolate(coarse, size=224, mode="bilinear").round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(rng.integers(0, 1000, args.n_images))
    model = create_model(args.model)
    adversarial = PGD(args.eps, steps=args.steps)(model, clean, labels, seed=0, batch_size=16)
    perturbation = (adversarial.to(torch.int16) - clean.to(torch.int16)).to(torch.int8)
    levels = np.bincount(perturbation.numpy().ravel().astype(np.int64) + 128, minlength=256)
    share_at_eps = levels[[128 - round(args.eps * 255), 128 + round(args.eps * 255)]].sum() / perturbation.numel()
    print(
        f"{args.n_images} images at 224 px, PGD-{args.steps} eps {args.eps:.4f}: {adversarial.numel() / 1e6:.1f} MB; "
        f"{100 * share_at_eps:.0f}% of the pixels' perturbation at +-eps"
    )
    raw = {"images": adversarial.numpy().tobytes(), "perturbation": perturbation.numpy().tobytes()}
    read = disk_read_rate(len(raw["images"]), False)
    print(f"read back uncompressed (page cache): {read:.0f} MB/s")
    if args.drop_caches:
        print(f"read back uncompressed (disk): {disk_read_rate(len(raw['images']), True):.0f} MB/s")
    print(f"{'codec':<10}{'stored':>14}{'ratio':>8}{'encode MB/s':>13}{'decode MB/s':>13}")
    for name, (encode, decode) in codecs().items():
        for what, data in raw.items():
            started = time.perf_counter()
            packed = encode(data)
            encoded = time.perf_counter() - started
            started = time.perf_counter()
            assert decode(packed) == data
            decoded = time.perf_counter() - started
            print(
                f"{name:<10}{what:>14}{len(data) / len(packed):>8.2f}"
                f"{len(data) / encoded / 1e6:>13.0f}{len(data) / decoded / 1e6:>13.0f}"
            )


if __name__ == "__main__":
    main()
