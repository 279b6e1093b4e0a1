"""Peak memory of a run against the number of images.

Each size runs in a fresh process: ``run_sat`` on ``--models`` over an ``npz`` file of
N random uint8 images (3 x side x side), from a cache holding trained weights only,
PGD with few steps (memory does not depend on the steps). Prints the peak resident
memory of the process (``VmHWM``), and the growth per image as a multiple of
one image's bytes: the number of copies of an image set held at the peak. A run
that streams its images shows a slope near 0.

With ``--measures cka regions boundary`` the child then writes the run folder and
runs ``compute_measures`` on it (the ``archsim measures`` command), so the peak is
that of the measures, which read the run's images again.

With ``--classes K`` the models are instead ``--n-models`` linear classifiers over
the pixels with K outputs (``file:`` specs saved here), which makes the results that
grow with images x models x classes (the clean logits) large next to the images, as
they are for a zoo of ImageNet models.

Besides ``VmHWM`` the child samples its anonymous resident memory (``RssAnon``)
every 2 ms and reports the largest value: pages of a memory-mapped cache entry count
in ``VmHWM`` as they are read, but the system can drop them again at any time, so
the anonymous peak is what a run cannot give back.

Each size runs twice: with glibc's default allocator, whose threshold for giving
large blocks straight back to the system rises as blocks are freed (so freed batch
buffers can stay in the heap, fragmented, and the resident size creeps up with the
length of the run), and with that threshold fixed at 1 MiB
(``MALLOC_MMAP_THRESHOLD_``), which shows what the run itself holds.

    python benchmarks/memory.py                       # 3 zoo models, 128 px, N = 1000, 4000, 16000
    python benchmarks/memory.py --sizes 1000 4000 --side 224
    python benchmarks/memory.py --models zoo:resnet-s0 zoo:mixer --measures cka regions boundary --sizes 500 1000 2000
    python benchmarks/memory.py --classes 1000 --n-models 8 --side 32 --sizes 2000 8000 32000
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
import torch
from common import machine, weights_only_cache

CHILD = """
import json, sys, threading, time
from pathlib import Path
from archsim import run_sat
from archsim.api import RunFolder, compute_measures
from archsim.cache import CacheStore

def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

anon_peak = [0]
def sample():
    while True:
        anon_peak[0] = max(anon_peak[0], status("RssAnon"))
        time.sleep(0.002)

threading.Thread(target=sample, daemon=True).start()
specs, data, cache, measures = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
run = run_sat(specs, data=data, steps=2, n_boot=0, device="cpu", batch_size=128, cache=CacheStore(cache))
if measures:
    RunFolder(Path(cache) / "run").write(run)
    compute_measures(Path(cache) / "run", measures, device="cpu", batch_size=128, cache=CacheStore(cache))
# VmHWM, not ru_maxrss: a child started by vfork + exec inherits the parent's peak in ru_maxrss.
print(json.dumps({"peak_kib": status("VmHWM"), "anon_peak_kib": max(anon_peak[0], status("RssAnon"))}))
"""


def linear_models(folder: Path, n: int, classes: int, side: int) -> list[str]:
    """``file:`` specs of ``n`` differently seeded linear classifiers over 3 x side x side pixels."""
    specs = []
    for seed in range(n):
        torch.manual_seed(seed)
        path = folder / f"linear_{seed}.pt"
        torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * side * side, classes)), path)
        specs.append(f"file:{path},input_size=3:{side}:{side},name=linear-{seed}")
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["zoo:resnet-s0", "zoo:convnext", "zoo:mixer"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 4000, 16000])
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--classes", type=int, help="linear models with this many outputs instead of --models")
    parser.add_argument("--n-models", type=int, default=8, help="how many linear models with --classes")
    parser.add_argument(
        "--measures", nargs="+", default=[], help="also run these measures on the run (archsim measures)"
    )
    args = parser.parse_args()
    per_image = 3 * args.side * args.side
    allocators = {"default": {}, "fixed 1 MiB threshold": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}
    peaks: dict[str, list[float]] = {name: [] for name in allocators}
    anon_peaks: dict[str, list[float]] = {name: [] for name in allocators}
    with tempfile.TemporaryDirectory() as tmp:
        if args.classes:
            models, classes = linear_models(Path(tmp), args.n_models, args.classes, args.side), args.classes
            weights = Path(tmp) / "weights"
            (weights / "zoo").mkdir(parents=True)
        else:
            models, classes = args.models, 10
            weights = weights_only_cache(Path(tmp) / "weights", models)
        logits_per_image = 4 * len(models) * classes
        print(
            f"{machine()}; {len(models)} models, {classes} classes, images 3x{args.side}x{args.side} "
            f"({per_image / 1024:.1f} KiB each; "
            f"clean logits of all models {logits_per_image / 1024:.1f} KiB per image), PGD 2 steps"
            + (f", then measures {' '.join(args.measures)}" if args.measures else "")
        )
        rng = np.random.default_rng(0)
        for n in args.sizes:
            data = Path(tmp) / f"images_{n}.npz"
            np.savez(
                data,
                images=rng.integers(0, 256, (n, 3, args.side, args.side), dtype=np.uint8),
                labels=np.arange(n) % classes,
            )
            for k, (name, env) in enumerate(allocators.items()):
                cache = Path(tmp) / f"cache_{n}_{k}"
                cache.mkdir()
                (cache / "zoo").symlink_to(weights / "zoo")
                done = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        json.dumps(models),
                        f"npz:{data}",
                        str(cache),
                        json.dumps(args.measures),
                    ],
                    capture_output=True,
                    text=True,
                    env={**os.environ, **env},
                )
                if done.returncode:
                    sys.exit(f"the run at N = {n} failed:\n{done.stderr[-3000:]}")
                found = json.loads(done.stdout.strip().splitlines()[-1])
                peaks[name].append(found["peak_kib"] * 1024)
                anon_peaks[name].append(found["anon_peak_kib"] * 1024)
                print(
                    f"N = {n:>6}: image set {n * per_image / 2**20:8.1f} MiB, clean logits "
                    f"{n * logits_per_image / 2**20:8.1f} MiB, "
                    f"allocator {name:>22}: peak RSS {peaks[name][-1] / 2**20:8.1f} MiB, anonymous "
                    f"{anon_peaks[name][-1] / 2**20:8.1f} MiB",
                    flush=True,
                )
            data.unlink()
    for name in allocators:
        for label, values in (("peak RSS", peaks[name]), ("anonymous", anon_peaks[name])):
            slope = np.polyfit(args.sizes, values, 1)[0]
            print(
                f"growth of {label}, allocator {name}: {slope / 1024:.1f} KiB per image = {slope / per_image:.2f} "
                f"image sets "
                f"= {slope / logits_per_image:.2f} sets of clean logits held at the peak"
            )


if __name__ == "__main__":
    main()
