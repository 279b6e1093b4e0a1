"""Peak memory of a run against the number of images.

Each size runs in a fresh process: ``run_sat`` on ``--models`` over an ``npz`` file of
N random uint8 images (3 x side x side), from a cache holding trained weights only,
PGD with few steps (memory does not depend on the steps). Prints the peak resident
memory of the process (``VmHWM``), and the growth per image as a multiple of
one image's bytes: the number of copies of an image set held at the peak. A run
that streams its images shows a slope near 0.

Each size runs twice: with glibc's default allocator, whose threshold for giving
large blocks straight back to the system rises as blocks are freed (so freed batch
buffers can stay in the heap, fragmented, and the resident size creeps up with the
length of the run), and with that threshold fixed at 1 MiB
(``MALLOC_MMAP_THRESHOLD_``), which shows what the run itself holds.

    python benchmarks/memory.py                       # 3 zoo models, 128 px, N = 1000, 4000, 16000
    python benchmarks/memory.py --sizes 1000 4000 --side 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import machine, weights_only_cache

CHILD = """
import json, sys
from archsim import run_sat
from archsim.cache import CacheStore
specs, data, cache = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
run_sat(specs, data=data, steps=2, n_boot=0, device="cpu", batch_size=128, cache=CacheStore(cache))
# VmHWM, not ru_maxrss: a child started by vfork + exec inherits the parent's peak in ru_maxrss.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_kib": peak}))
"""

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["zoo:resnet-s0", "zoo:convnext", "zoo:mixer"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 4000, 16000])
    parser.add_argument("--side", type=int, default=128)
    args = parser.parse_args()
    per_image = 3 * args.side * args.side
    print(f"{machine()}; {len(args.models)} models, images 3x{args.side}x{args.side} ({per_image / 1024:.0f} KiB each), PGD 2 steps")
    allocators = {"default": {}, "fixed 1 MiB threshold": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}
    peaks: dict[str, list[float]] = {name: [] for name in allocators}
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_only_cache(Path(tmp) / "weights", args.models)
        rng = np.random.default_rng(0)
        for n in args.sizes:
            data = Path(tmp) / f"images_{n}.npz"
            np.savez(data, images=rng.integers(0, 256, (n, 3, args.side, args.side), dtype=np.uint8), labels=np.arange(n) % 10)
            for k, (name, env) in enumerate(allocators.items()):
                cache = Path(tmp) / f"cache_{n}_{k}"
                cache.mkdir()
                (cache / "zoo").symlink_to(weights / "zoo")
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, json.dumps(args.models), f"npz:{data}", str(cache)],
                    capture_output=True, text=True, check=True, env={**os.environ, **env},
                )
                peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"] * 1024
                peaks[name].append(peak)
                print(f"N = {n:>6}: image set {n * per_image / 2**20:8.1f} MiB, allocator {name:>22}: peak RSS {peak / 2**20:8.1f} MiB", flush=True)
            data.unlink()
    for name, values in peaks.items():
        slope = np.polyfit(args.sizes, values, 1)[0]
        print(f"growth, allocator {name}: {slope / 1024:.1f} KiB per image = {slope / per_image:.2f} image sets held at the peak")

if __name__ == "__main__":
    main()
