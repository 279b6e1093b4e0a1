"""Peak memory of a run against the number of images.

Each size runs in a fresh process: ``run_sat`` on ``--models`` over an ``npz`` file of
N random uint8 images (3 x side x side), from a cache holding trained weights only,
PGD with few steps (memory does not depend on the steps). Prints the peak resident
memory of the process (``ru_maxrss``), and the growth per image as a multiple of
one image's bytes: the number of copies of an image set held at the peak. A run
that streamed its images would show a slope near 0.

    python benchmarks/memory.py                       # 3 zoo models, 128 px, N = 500, 2000, 8000
    python benchmarks/memory.py --sizes 1000 4000 --side 224
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import machine, weights_only_cache

CHILD = """
import json, resource, sys
from archsim import run_sat
from archsim.cache import CacheStore
specs, data, cache = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
run_sat(specs, data=data, steps=2, n_boot=0, device="cpu", batch_size=128, cache=CacheStore(cache))
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["zoo:resnet-s0", "zoo:convnext", "zoo:mixer"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[500, 2000, 8000])
    parser.add_argument("--side", type=int, default=128)
    args = parser.parse_args()
    per_image = 3 * args.side * args.side
    print(f"{machine()}; {len(args.models)} models, images 3x{args.side}x{args.side} ({per_image / 1024:.0f} KiB each), PGD 2 steps")
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_only_cache(Path(tmp) / "weights", args.models)
        rng = np.random.default_rng(0)
        for n in args.sizes:
            data = Path(tmp) / f"images_{n}.npz"
            np.savez(data, images=rng.integers(0, 256, (n, 3, args.side, args.side), dtype=np.uint8), labels=np.arange(n) % 10)
            cache = Path(tmp) / f"cache_{n}"
            cache.mkdir()
            (cache / "zoo").symlink_to(weights / "zoo")
            done = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(args.models), f"npz:{data}", str(cache)],
                capture_output=True, text=True, check=True,
            )
            peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"] * 1024
            peaks.append(peak)
            print(f"N = {n:>6}: image set {n * per_image / 2**20:8.1f} MiB, peak RSS {peak / 2**20:8.1f} MiB", flush=True)
    slope = np.polyfit(args.sizes, peaks, 1)[0]
    print(f"growth: {slope / 1024:.0f} KiB per image = {slope / per_image:.2f} image sets held at the peak")


if __name__ == "__main__":
    main()
