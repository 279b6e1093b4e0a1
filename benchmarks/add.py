"""Cost of `archsim add` (SPEC §2.8) against recomputing the whole N+1-model run.

Both start from trained weights only; the run of N models is made first (not
timed), then the newcomer is added, then all N+1 models are run again from an
empty cache. Prints seconds, the ratio and the largest difference between the
two SAT matrices (should be 0: same attacks, same images, same seeds).

    python benchmarks/add.py                      # 10 zoo models + zoo:mobilevit, digits, paper PGD
    python benchmarks/add.py --n-images 120 --steps 10
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, weights_only_cache

from archsim import run_sat
from archsim.applications.newcomer import add_model
from archsim.models import zoo_specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--newcomer", default="zoo:mobilevit")
    parser.add_argument("--n-images", type=int, default=None, help="default: all 360 evaluation digits")
    parser.add_argument("--steps", type=int, default=None, help="default: the paper's 50")
    args = parser.parse_args()
    base = [spec for spec in zoo_specs() if spec != args.newcomer]
    settings = dict(n_images=args.n_images, steps=args.steps, n_boot=1000)
    print(f"{machine()}; {len(base)} models + {args.newcomer}, settings {settings}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_only_cache(Path(tmp) / "weights", base + [args.newcomer])
        first = Path(tmp) / "cache-add"
        shutil.copytree(weights, first)
        run_sat(base, **settings, cache=first, out=Path(tmp) / "run")

        started = time.perf_counter()
        added = add_model(Path(tmp) / "run", args.newcomer, cache=first)
        add_seconds = time.perf_counter() - started

        second = Path(tmp) / "cache-full"
        shutil.copytree(weights, second)
        started = time.perf_counter()
        full = run_sat(base + [args.newcomer], **settings, cache=second)
        full_seconds = time.perf_counter() - started

    difference = float(np.nanmax(np.abs(added.run.sat.to_numpy() - full.sat.to_numpy())))
    print(
        f"add:            {add_seconds:7.1f} s  ({added.run.cache_misses} computed, {added.run.cache_hits} from the "
        f"cache)"
    )
    print(f"full recompute: {full_seconds:7.1f} s  ({full.cache_misses} computed)")
    print(f"ratio:          {full_seconds / add_seconds:7.1f}x faster; largest SAT difference {difference:.2e}")


if __name__ == "__main__":
    main()
