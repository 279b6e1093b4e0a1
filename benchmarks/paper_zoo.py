"""The SAT paper's 68 architectures with stage 2 at work: random weights with 2-class heads on photos in two classes
(about half of them clean-correct for each model), own views at 224, 240 and 256 px, PGD with few steps. Prints the
time of each part of the run (the check of every model, builds, clean passes, attacks, evaluation, batch searches)
and the pairs evaluated across resolutions.

``make test-scale`` runs one of each base architecture and input size so; this is the whole 68.

    python benchmarks/paper_zoo.py [--steps 1] [--batch-size auto] [--device cpu] [--out benchmarks/results/paper_zoo]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine

from archsim import run_sat
from archsim.cache import CacheStore
from archsim.tests.test_paper_architectures import paper_specs
from archsim.tests.test_views import photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="the first N architectures only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(machine())
    specs = paper_specs("pretrained=false", "num_classes=2")[: args.limit]
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        photos(Path(tmp) / "set")
        started = time.perf_counter()
        run = run_sat(
            specs,
            data=f"imagefolder:{Path(tmp) / 'set'}",
            steps=args.steps,
            n_boot=0,
            device=args.device,
            batch_size=batch,
            cache=CacheStore(Path(tmp) / "cache"),
        )
        seconds = time.perf_counter() - started
    cost, timings = run.config["cost"], run.timings
    sizes = run.models.set_index("model").view.str.split("/").str[0].astype(int)
    sat = run.sat
    defined = [(a, b) for a in sat.index for b in sat.columns if a != b and np.isfinite(sat.loc[a, b])]
    parts = {
        "whole run": seconds,
        "check of every model (preflight_s)": cost["preflight_s"],
        "attack stage": cost["attack_stage_s"],
        "  builds (load_s)": timings.load_s.sum(),
        "  clean passes (clean_s)": timings.clean_s.sum(),
        "  attacks (attack_s)": timings.attack_s.sum(),
        "  batch searches (search_s)": timings.search_s.sum(),
        "evaluation stage": cost["evaluate_stage_s"],
        "  builds (evaluate_load_s)": timings.evaluate_load_s.sum(),
        "  evaluation (evaluate_s)": timings.evaluate_s.sum(),
        "  batch searches (evaluate_search_s)": timings.evaluate_search_s.sum(),
    }
    for part, value in parts.items():
        print(f"{part:40s} {value:8.1f} s")
    cross = sum(sizes[a] != sizes[b] for a, b in defined)
    pairs = len(sat) * (len(sat) - 1)
    print(
        f"{len(specs)} architectures, views at {sorted(set(sizes))} px; clean accuracy "
        f"{run.models.clean_accuracy.mean():.0f} % on average; {len(defined)} of {pairs} pairs defined "
        f"({cross} across resolutions); {cost['stage2_images_evaluated']} images evaluated in stage 2, "
        f"{cost['stage2_groups']} group(s)"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        timings.to_csv(args.out / "timings.csv", index=False, float_format="%.4g")
        (args.out / "summary.json").write_text(json.dumps({k: round(v, 2) for k, v in parts.items()}, indent=2))


if __name__ == "__main__":
    main()
