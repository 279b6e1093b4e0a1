"""bf16 autocast against fp32 on the same models: white-box success, the SAT matrix, time.

Runs ``run_sat`` on the embedded zoo (all digits evaluation images, the paper's PGD)
once per precision, each from a cache holding trained weights only, and prints the
white-box success of every model under both, the Spearman and Pearson correlation
of the off-diagonal SAT entries, the largest entry difference, and the time of each
run. Issue 7's bar for making bf16 the default on GPUs: rank correlation >= 0.99.

    python benchmarks/precision.py --device cuda
    python benchmarks/precision.py --device cpu --n-models 4 --n-images 120
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, weights_only_cache
from scipy.stats import pearsonr, spearmanr

from archsim import run_sat
from archsim.cache import CacheStore
from archsim.models import zoo_specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-models", type=int, default=None, help="first N zoo models [default: all]")
    parser.add_argument("--n-images", type=int, default=None, help="[default: all 360 evaluation digits]")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--save", default=None, help="folder to write sat_fp32.csv and sat_bf16.csv into")
    args = parser.parse_args()
    specs = zoo_specs()[: args.n_models]
    print(f"{machine()}; device {args.device}; {len(specs)} zoo models, digits ({args.n_images or 'all'} images), PGD 50 steps")
    runs, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_only_cache(Path(tmp) / "weights", specs)
        for precision in ("fp32", "bf16"):
            store = CacheStore(Path(tmp) / precision)
            store.root.mkdir()
            (store.root / "zoo").symlink_to(weights / "zoo")
            started = time.perf_counter()
            runs[precision] = run_sat(
                specs, n_images=args.n_images, n_boot=0, device=args.device, batch_size=args.batch_size, cache=store,
                precision=precision, compile=args.compile,
            )
            seconds[precision] = time.perf_counter() - started
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        for precision, run in runs.items():
            run.sat.to_csv(Path(args.save) / f"sat_{precision}.csv", float_format="%.9f")
    fp32, bf16 = (runs[p].sat.to_numpy() for p in ("fp32", "bf16"))
    off = ~np.eye(len(specs), dtype=bool)
    wb = runs["fp32"].models.set_index("model")["white_box_success"].to_frame("fp32")
    wb["bf16"] = runs["bf16"].models.set_index("model")["white_box_success"]
    wb["clean fp32"] = runs["fp32"].models.set_index("model")["clean_accuracy"]
    wb["clean bf16"] = runs["bf16"].models.set_index("model")["clean_accuracy"]
    print(wb.round(2).to_string())
    rho, r = spearmanr(fp32[off], bf16[off])[0], pearsonr(fp32[off], bf16[off])[0]
    print(f"off-diagonal SAT, bf16 against fp32: Spearman {rho:.4f}, Pearson {r:.4f}, "
          f"largest difference {np.abs(fp32 - bf16).max():.3f} (entries {fp32[off].min():.2f}..{fp32[off].max():.2f})")
    print(f"time: fp32 {seconds['fp32']:.1f} s, bf16 {seconds['bf16']:.1f} s ({seconds['fp32'] / seconds['bf16']:.2f}x)")


if __name__ == "__main__":
    main()
