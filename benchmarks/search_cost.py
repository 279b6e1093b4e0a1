"""What the batch-size search and the model check cost beside the work they serve, measured in one run.

1. ``zoo``: the SAT paper's architectures (random weights, 2-class heads, as ``make test-scale``) on ``--images``
   photos with PGD of ``--steps`` steps, from an empty cache, twice: with ``--batch-size auto`` and with a fixed
   ``--fixed`` (4). Prints each run's parts (check, builds, clean passes, attacks, evaluation, searches), the
   searches' share of the work they size (attacks, clean passes and evaluation at the batch chosen), and the ratio of
   the two runs' wall times.
2. ``sweep``: ResNet-50, ViT-B/16, ConvNeXt-T and EfficientNet-B3 at 224 px: the attack step's steady throughput at
   each fixed batch size (the best found by the sweep), the size ``auto`` picks for PGD-``--sweep-steps`` on
   ``--sweep-images`` images and for their clean pass, its throughput against the best, and the search's cost against
   that work at the chosen size.
3. ``demo``: ``archsim run``'s default job (the embedded zoo on the digits) from an empty result cache, trained
   weights reused: the searches' share there.

    python benchmarks/search_cost.py [--parts zoo sweep demo] [--limit N] [--images 4] [--steps 1] [--fixed 4]
        [--out benchmarks/results/search_cost]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import machine, weights_only_cache

from archsim import run_sat
from archsim.cache import CacheStore
from archsim.models import SimModel, create_model, prepare, zoo_specs
from archsim.tests.test_paper_architectures import paper_specs
from archsim.tests.test_views import photos
from archsim.transfer import batching

SWEEP = [
    "timm:resnet50,pretrained=false",
    "timm:vit_base_patch16_224,pretrained=false",
    "timm:convnext_tiny,pretrained=false",
    "timm:efficientnet_b3,pretrained=false",  # timed at 224 px like the others
]


def parts_of(run, seconds: float) -> dict[str, float]:
    cost, t = run.config["cost"], run.timings
    work = t.attack_s.sum() + t.clean_s.sum() + t.evaluate_s.sum()
    searches = t.search_s.sum() + t.evaluate_search_s.sum()
    return {
        "whole run": seconds,
        "check of every model (preflight_s)": cost["preflight_s"],
        "builds (load_s + evaluate_load_s)": t.load_s.sum() + t.evaluate_load_s.sum(),
        "clean passes (clean_s)": t.clean_s.sum(),
        "attacks (attack_s)": t.attack_s.sum(),
        "evaluation (evaluate_s)": t.evaluate_s.sum(),
        "searches (search_s + evaluate_search_s)": searches,
        "searches / work sized (%)": 100 * searches / work if work else float("nan"),
    }


def zoo(args: argparse.Namespace) -> dict:
    specs = paper_specs("pretrained=false", "num_classes=2")[: args.limit]
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        photos(Path(tmp) / "set", count=args.images)
        for batch in ("auto", args.fixed):
            started = time.perf_counter()
            run = run_sat(
                specs,
                data=f"imagefolder:{Path(tmp) / 'set'}",
                steps=args.steps,
                n_boot=0,
                device="cpu",
                batch_size=batch,
                cache=CacheStore(Path(tmp) / f"cache-{batch}"),
            )
            table[f"batch {batch}"] = parts_of(run, time.perf_counter() - started)
    frame = pd.DataFrame(table)
    print(f"\n{len(specs)} architectures, {args.images} photos, PGD-{args.steps}, fresh caches:")
    print(frame.round(1).to_string())
    ratio = table["batch auto"]["whole run"] / table[f"batch {args.fixed}"]["whole run"]
    print(f"auto / batch {args.fixed}: {ratio:.2f}x the wall time")
    return {"parts": table, "ratio": ratio}


def steady_rate(model, purpose: str, size: int, seconds: float = 3.0) -> float:
    """Images per second of the step at ``size`` over about ``seconds``, after a warm-up."""
    trial = batching.step_trial(model, purpose, (3, 224, 224), "fp32")
    trial(size)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds or done < 2 * size:
        trial(size)
        done += batching.TRIAL_STEPS * size
    return done / (time.perf_counter() - began)


def sweep(args: argparse.Namespace) -> list[dict]:
    rows = []
    for spec in SWEEP:
        model = prepare(create_model(spec), purpose="attack")
        with tempfile.TemporaryDirectory() as tmp:
            store = CacheStore(Path(tmp))
            x = torch.zeros((batching.CHECK_IMAGES, 3, 224, 224))
            y = torch.zeros(batching.CHECK_IMAGES, dtype=torch.long)

            def check_step(model: SimModel = model, x: torch.Tensor = x, y: torch.Tensor = y) -> None:
                loss = torch.nn.functional.cross_entropy(model(x.requires_grad_(True)), y, reduction="sum")
                torch.autograd.grad(loss, x)

            batching.record_check(model, len(x), (3, 224, 224), "fp32", check_step, store)
            for purpose, work in (("attack", args.sweep_images * args.sweep_steps), ("evaluate", args.sweep_images)):
                searched = batching.search_seconds()
                chosen = batching.batch_size_for(
                    model, "auto", purpose, (3, 224, 224), args.sweep_images, store, work=work
                )
                search_s = batching.search_seconds() - searched
                sizes = sorted(
                    {1 << k for k in range(11) if 1 << k <= min(args.sweep_images, args.sweep_max)} | {chosen}
                )
                rates = {size: steady_rate(model, purpose, size) for size in sizes}
                best = max(rates, key=rates.get)
                work_s = work / rates[chosen]
                rows.append(
                    {
                        "model": spec.split(",")[0],
                        "purpose": purpose,
                        "work (image passes)": work,
                        "chosen": chosen,
                        "best fixed": best,
                        "chosen / best rate": rates[chosen] / rates[best],
                        "search_s": search_s,
                        "work_s at chosen": work_s,
                        "search / work (%)": 100 * search_s / work_s,
                        "rates": {k: round(v, 2) for k, v in rates.items()},
                    }
                )
                print(rows[-1], flush=True)
    frame = pd.DataFrame(rows).drop(columns="rates")
    print(f"\nSweep at 224 px, PGD-{args.sweep_steps} on {args.sweep_images} images and their clean pass:")
    print(frame.round(3).to_string(index=False))
    return rows


def demo(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = weights_only_cache(Path(tmp) / "cache", zoo_specs())
        started = time.perf_counter()
        run = run_sat(cache=CacheStore(folder), n_boot=0)
        parts = parts_of(run, time.perf_counter() - started)
    print("\nThe demo's job from an empty result cache:")
    print(pd.Series(parts).round(2).to_string())
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="*", default=["zoo", "sweep", "demo"], choices=["zoo", "sweep", "demo"])
    parser.add_argument("--limit", type=int, default=None, help="the first N paper architectures only")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--fixed", type=int, default=4)
    parser.add_argument("--sweep-images", type=int, default=256)
    parser.add_argument("--sweep-steps", type=int, default=10)
    parser.add_argument("--sweep-max", type=int, default=32, help="the largest fixed batch the sweep times")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(machine())
    results = {name: globals()[name](args) for name in args.parts}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
