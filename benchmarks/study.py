"""What the SAT paper's whole study costs with archsim: measured on its architectures, extrapolated to 5,000 images and
PGD-50.

The real pipeline (``run_sat``: preflight, attack stage, evaluation stage) runs on the
paper's timm architectures with random weights and seeded synthetic 224-px images, from an
empty cache, at ``--n-images`` and ``--steps``. Each model's load time, attack rate
(image-steps/s) and clean forward rate (images/s, the rate of evaluation too) are
taken from the run's ``timings``. The extrapolation to the full study (``--full-images``,
``--full-steps``, all N x N evaluations) counts, per model, the model check (its share of the
run's check stage: build and 2 images), two more builds (attack task, evaluation group), the
batch-size searches (at most their share of the work they size, and never less than measured
here), the clean pass and the attack of ``--full-images`` images, and the evaluation of N sets
on the images inside X_st (``--accuracy`` squared of them: random weights classify
nothing right, so the run itself skips every evaluation and its rate is taken from the clean pass).

Beside it, the naive way an attack-library user writes: for every ordered pair, torchattacks
PGD on the source again and the target evaluated, N^2 attacks. torchattacks' rate is measured
here on each model in the same run (``--naive-models`` of them; the mean ratio to archsim's
rate covers the rest).

    python benchmarks/study.py --device cuda --n-images 128 --steps 5            # all 68 architectures on a GPU
    python benchmarks/study.py --limit 6 --n-images 4 --steps 1 --batch-size 4   # a handful, on a CPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import machine

from archsim import run_sat
from archsim.api import IMAGENET_EPS
from archsim.attacks.base import to_device
from archsim.cache import CacheStore
from archsim.models import create_model, prepare
from archsim.specs import model_list
from archsim.transfer.batching import SEARCH_SHARE

PAPER_MODELS = Path(__file__).resolve().parents[1] / "zoos" / "sat-paper.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="*", default=[f"@{PAPER_MODELS}"], help="specs or @FILE [default: the paper's 68]"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first K models")
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--full-images", type=int, default=5000)
    parser.add_argument("--full-steps", type=int, default=50)
    parser.add_argument("--full-models", type=int, default=69, help="models of the full study (the paper: 69)")
    parser.add_argument(
        "--accuracy", type=float, default=0.8, help="clean accuracy assumed for X_st (ImageNet models: ~0.8)"
    )
    parser.add_argument("--gpus", type=int, default=8, help="devices of the node the Ray extrapolation assumes")
    parser.add_argument(
        "--naive-models", type=int, default=None, help="models to time torchattacks PGD on [default: all]"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the per-model table and the totals as CSVs here")
    args = parser.parse_args()

    specs = [
        s if "pretrained=" in s or not s.startswith(("timm:", "torchvision:")) else f"{s},pretrained=false"
        for s in model_list(args.models)
    ]
    specs = specs[: args.limit] if args.limit else specs
    print(machine())
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        np.savez(
            Path(folder) / "set.npz",
            images=rng.integers(0, 256, (args.n_images, 3, 224, 224), dtype=np.uint8),
            labels=rng.integers(0, 1000, args.n_images),
            classes=np.array([str(i) for i in range(1000)]),
        )
        store = CacheStore(Path(folder) / "cache")
        started = time.perf_counter()
        run = run_sat(
            specs,
            data=f"npz:{Path(folder) / 'set.npz'}",
            steps=args.steps,
            n_boot=0,
            device=args.device,
            batch_size=int(args.batch_size) if args.batch_size.isdigit() else args.batch_size,
            cache=store,
            precision=args.precision,
        )
        wall = time.perf_counter() - started
        device = run.config["device"]
        naive_rates = torchattacks_rates(
            run.transfer.specs[: args.naive_models], store, device, args, run.config["precision"]
        )
    table = run.timings.copy()
    table["clean_images_per_s"] = args.n_images / table.clean_s
    table["torchattacks_image_steps_per_s"] = pd.Series(naive_rates, dtype=float).reindex(range(len(table))).to_numpy()
    ratio = float(np.nanmean(table.torchattacks_image_steps_per_s / table.attack_image_steps_per_s))
    table["torchattacks_image_steps_per_s"] = table.torchattacks_image_steps_per_s.fillna(
        table.attack_image_steps_per_s * ratio
    )
    cost = run.config["cost"]
    print(
        f"measured: {len(specs)} models, {args.n_images} images, PGD-{args.steps} on {device} "
        f"({run.config['precision']}): "
        f"{wall:.0f} s (preflight {cost['preflight_s']:.0f} s, attack stage {cost['attack_stage_s']:.0f} s, "
        f"evaluation stage {cost['evaluate_stage_s']:.0f} s)"
    )
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        shown = ["model", "load_s", "search_s", "attack_image_steps_per_s", "clean_images_per_s"]
        shown += ["torchattacks_image_steps_per_s"]
        print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    args.preflight_s = cost["preflight_s"]
    totals = extrapolate(table, args)
    for label, hours in totals.items():
        print(f"{label:<60}{hours:>10.2f} h")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "study_models.csv", index=False, float_format="%.4g")
        pd.Series(totals, name="hours").rename_axis("estimate").to_csv(
            args.out / "study_totals.csv", float_format="%.4g"
        )


def extrapolate(table: pd.DataFrame, args: argparse.Namespace) -> dict[str, float]:
    """Device-hours of the full study from the per-model rates, scaled from the models measured to ``--full-models``."""
    n_full, images, steps = args.full_models, args.full_images, args.full_steps
    scale = n_full / len(table)  # the measured models stand for the study's mix of architectures
    # The model check builds each model and runs 2 images through it (the run measured its whole stage); the attack
    # task and the evaluation group build it again.
    check = pd.Series(args.preflight_s / len(table), index=table.index)
    loads = 2 * table.load_s
    clean = images / table.clean_images_per_s
    attack = images * steps / table.attack_image_steps_per_s
    evaluate = n_full * images * args.accuracy**2 / table.clean_images_per_s
    # Batch-size searches (--batch-size auto): their trials take at most SEARCH_SHARE of the work they size, so the
    # full study's are bounded by that share of its clean passes, attacks and evaluations; never less than this run's.
    bound = SEARCH_SHARE if args.batch_size == "auto" else 0.0
    search_first = np.maximum(table.search_s, bound * (clean + attack))
    search_second = np.maximum(table.evaluate_search_s, bound * evaluate)
    search = search_first + search_second
    per_model = check + loads + search + clean + attack + evaluate
    one_device = per_model.sum() * scale / 3600
    # Ray on a node: checks and attacks spread over the devices, then each device evaluates a group of N/gpus targets.
    first = check + table.load_s + search_first + clean + attack
    second = table.load_s + search_second + evaluate
    stage1 = max(first.sum() * scale / args.gpus, first.max())
    stage2 = max(second.sum() * scale / args.gpus, second.max())
    naive_attack = images * steps / table.torchattacks_image_steps_per_s
    # N^2 attacks and evaluations
    naive = n_full * (naive_attack.sum() + (images / table.clean_images_per_s).sum()) * scale / 3600
    return {
        f"archsim, {n_full} models, one device": one_device,
        "  of which attacks": attack.sum() * scale / 3600,
        "  of which evaluations (inside X_st)": evaluate.sum() * scale / 3600,
        "  of which clean passes": clean.sum() * scale / 3600,
        "  of which model checks (build and 2 images)": check.sum() * scale / 3600,
        "  of which model builds (attack task, evaluation group)": loads.sum() * scale / 3600,
        "  of which batch-size searches (at most 3 % of the work)": search.sum() * scale / 3600,
        f"archsim under Ray, {args.gpus} devices (wall time)": (stage1 + stage2) / 3600,
        "naive: torchattacks PGD per pair, one device": naive,
    }


def torchattacks_rates(
    specs: list[str], store: CacheStore, device: str, args: argparse.Namespace, precision: str
) -> list[float]:
    """torchattacks PGD image-steps per second on each model, same images, steps and batch as the run."""
    import torchattacks

    rates = []
    batch = int(args.batch_size) if args.batch_size.isdigit() else min(args.n_images, 64)
    images = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
    for spec in specs:
        model = prepare(create_model(spec, cache=store, device=device), "fp32")
        attack = torchattacks.PGD(model, eps=IMAGENET_EPS, alpha=IMAGENET_EPS / 10, steps=args.steps, random_start=True)
        x = to_device(images, torch.device(device)).float() / 255
        y = torch.randint(0, 1000, (batch,), device=device)
        attack(x, y)  # warm-up
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        sync()
        began = time.perf_counter()
        attack(x, y)
        sync()
        rates.append(batch * args.steps / (time.perf_counter() - began))
    return rates


if __name__ == "__main__":
    main()
