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
    python benchmarks/memory.py --models timm:resnet50,pretrained=false timm:vit_base_patch16_224,pretrained=false \\
        timm:convnext_small,pretrained=false timm:efficientnet_b3,pretrained=false --side 224 --sizes 8 \\
        --measures boundary --max-resident 1 auto --batch-size 4 --allocators default

With ``--max-resident`` values the whole measurement repeats for each (the run and the
measures keep that many models loaded): the peak should then follow the models held, not the zoo.
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
resident, batch = json.loads(sys.argv[5]), int(sys.argv[6])
run = run_sat(
    specs, data=data, steps=2, n_boot=0, device="cpu", batch_size=batch, cache=CacheStore(cache), max_resident=resident
)
if measures:
    RunFolder(Path(cache) / "run").write(run)
    run_peak = status("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on is the measures' own peak
    anon_peak[0] = 0
    compute_measures(
        Path(cache) / "run", measures, device="cpu", batch_size=batch, cache=CacheStore(cache), max_resident=resident
    )
# VmHWM, not ru_maxrss: a child started by vfork + exec inherits the parent's peak in ru_maxrss.
found = {"peak_kib": status("VmHWM"), "anon_peak_kib": max(anon_peak[0], status("RssAnon"))}
print(json.dumps({**found, "run_peak_kib": run_peak} if measures else found))
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
    parser.add_argument("--max-resident", nargs="+", default=["auto"], help="models kept loaded (run and measures)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--allocators", choices=["both", "default"], default="both")
    args = parser.parse_args()
    per_image = 3 * args.side * args.side
    allocators = {"default": {}, "fixed 1 MiB threshold": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}
    if args.allocators == "default":
        del allocators["fixed 1 MiB threshold"]
    resident = [int(r) if r.isdigit() else r for r in args.max_resident]
    peaks: dict[str, list[float]] = {}
    anon_peaks: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.classes:
            models, classes = linear_models(Path(tmp), args.n_models, args.classes, args.side), args.classes
            weights = Path(tmp) / "weights"
            (weights / "zoo").mkdir(parents=True)
        else:
            # ImageNet models (timm:, torchvision:) read 1,000 classes; the zoo's the 10 digits.
            models = args.models
            classes = 1000 if any(m.startswith(("timm:", "torchvision:")) for m in models) else 10
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
                classes=np.array([str(c) for c in range(classes)]),
            )
            for resident_models in resident:
                for k, (name, env) in enumerate(allocators.items()):
                    cache = Path(tmp) / f"cache_{n}_{k}_{resident_models}"
                    cache.mkdir()
                    (cache / "zoo").symlink_to(weights / "zoo")
                    child = [json.dumps(models), f"npz:{data}", str(cache), json.dumps(args.measures)]
                    child += [json.dumps(resident_models), str(args.batch_size)]
                    done = subprocess.run(
                        [sys.executable, "-c", CHILD, *child], capture_output=True, text=True, env={**os.environ, **env}
                    )
                    if done.returncode:
                        sys.exit(f"the run at N = {n} failed:\n{done.stderr[-3000:]}")
                    found = json.loads(done.stdout.strip().splitlines()[-1])
                    label = name if len(resident) == 1 else f"{name}, max-resident {resident_models}"
                    peaks.setdefault(label, []).append(found["peak_kib"] * 1024)
                    anon_peaks.setdefault(label, []).append(found["anon_peak_kib"] * 1024)
                    run_part = f"run peak {found['run_peak_kib'] / 2**10:8.1f} MiB, measures " if args.measures else ""
                    print(
                        f"N = {n:>6}: image set {n * per_image / 2**20:8.1f} MiB, clean logits "
                        f"{n * logits_per_image / 2**20:8.1f} MiB, allocator {label}: {run_part}"
                        f"peak RSS {peaks[label][-1] / 2**20:8.1f} MiB, "
                        f"anonymous {anon_peaks[label][-1] / 2**20:8.1f} MiB",
                        flush=True,
                    )
            data.unlink()
    if len(args.sizes) < 2:
        return  # no growth to fit
    for name in peaks:
        for label, values in (("peak RSS", peaks[name]), ("anonymous", anon_peaks[name])):
            slope = np.polyfit(args.sizes, values, 1)[0]
            print(
                f"growth of {label}, allocator {name}: {slope / 1024:.1f} KiB per image = {slope / per_image:.2f} "
                f"image sets "
                f"= {slope / logits_per_image:.2f} sets of clean logits held at the peak"
            )


if __name__ == "__main__":
    main()
