"""bf16 autocast against fp32 on the same models: white-box success, the SAT matrix, time.

Runs ``run_sat`` on the embedded zoo (all digits evaluation images, the paper's PGD)
per precision and seed, from caches holding trained weights only, and prints the
white-box success of every model under both precisions, the time of each run, and
how far apart the off-diagonal SAT entries of two runs are (Spearman and Pearson
correlation, largest entry difference):

- bf16 against fp32 at the same seed: what autocast changes;
- fp32 against fp32 at another seed: the same images and models, other random
  starts. This is the attack's own noise, the floor any precision is judged by
  (more than one seed needs all images: the seed also draws an ``--n-images`` subset);
- bf16 against fp32 at other seeds, and bf16 against bf16;
- at the first seed, each stage under the other precision: the bf16 adversarial
  sets evaluated in fp32 and the fp32 sets evaluated in bf16, which shows the stage
  the difference comes from.

Issue 7's bar for making bf16 the default on GPUs: rank correlation >= 0.99.

    python benchmarks/precision.py --device cuda --seeds 4
    python benchmarks/precision.py --device cpu --n-models 4 --n-images 120 --seeds 1
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import machine, weights_only_cache
from scipy.stats import pearsonr, spearmanr

from archsim import SatRun, run_sat
from archsim.cache import CacheStore
from archsim.measures import sat_tables
from archsim.models import zoo_specs
from archsim.transfer.stages import evaluate_targets

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-models", type=int, default=None, help="first N zoo models [default: all]")
    parser.add_argument("--n-images", type=int, default=None, help="[default: all 360 evaluation digits]")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=2, help="runs per precision, at seeds --seed, --seed + 1, ...")
    parser.add_argument("--save", default=None, help="folder to write sat_<precision>_seed<N>.csv into")
    args = parser.parse_args()
    if args.seeds > 1 and args.n_images is not None:
        parser.error("--seeds above 1 needs all images (no --n-images): the seed draws the subset too")
    specs = zoo_specs()[: args.n_models]
    seeds = range(args.seed, args.seed + args.seeds)
    print(
        f"{machine()}; device {args.device}; {len(specs)} zoo models, digits ({args.n_images or 'all'} images), "
        f"PGD 50 steps, seeds {list(seeds)}"
    )
    runs: dict[tuple[str, int], SatRun] = {}
    seconds: dict[tuple[str, int], float] = {}
    stores: dict[str, CacheStore] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_only_cache(Path(tmp) / "weights", specs)
        for precision in PRECISIONS:
            stores[precision] = store = CacheStore(Path(tmp) / precision)
            store.root.mkdir()
            (store.root / "zoo").symlink_to(weights / "zoo")
            for seed in seeds:
                started = time.perf_counter()
                runs[precision, seed] = run_sat(
                    specs,
                    n_images=args.n_images,
                    n_boot=0,
                    device=args.device,
                    batch_size=args.batch_size,
                    cache=store,
                    precision=precision,
                    compile=args.compile,
                    seed=seed,
                )
                seconds[precision, seed] = time.perf_counter() - started
        first = args.seed
        # The adversarial sets of one precision judged by the models under the other.
        crossed = {
            "bf16 attack, fp32 evaluation": evaluated(
                runs["bf16", first], "fp32", runs["fp32", first], stores["bf16"], args
            ),
            "fp32 attack, bf16 evaluation": evaluated(
                runs["fp32", first], "bf16", runs["bf16", first], stores["fp32"], args
            ),
        }
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        for (precision, seed), run in runs.items():
            run.sat.to_csv(Path(args.save) / f"sat_{precision}_seed{seed}.csv", float_format="%.9f")
    table = runs["fp32", first].models.set_index("model")[["white_box_success", "clean_accuracy"]]
    table.columns = ["white-box fp32", "clean fp32"]
    table["white-box bf16"] = runs["bf16", first].models.set_index("model")["white_box_success"]
    table["clean bf16"] = runs["bf16", first].models.set_index("model")["clean_accuracy"]
    print(f"seed {first}:\n{table.round(2).to_string()}")

    sat = {key: run.sat.to_numpy() for key, run in runs.items()}
    off = ~np.eye(len(specs), dtype=bool)
    print(
        f"off-diagonal SAT entries ({sat['fp32', first][off].min():.2f}..{sat['fp32', first][off].max():.2f}), one "
        f"pair of runs a line:"
    )
    print(f"{'':<52}{'Spearman':>9}{'Pearson':>9}{'largest difference':>20}")
    groups: dict[str, list[float]] = {}

    def compare(group: str, label: str, a: np.ndarray, b: np.ndarray) -> None:
        rho, r = spearmanr(a[off], b[off])[0], pearsonr(a[off], b[off])[0]
        groups.setdefault(group, []).append(rho)
        print(f"{label:<52}{rho:>9.4f}{r:>9.4f}{np.abs(a - b).max():>20.3f}")

    for seed in seeds:
        compare("bf16 vs fp32, same seed", f"bf16 vs fp32, seed {seed}", sat["bf16", seed], sat["fp32", seed])
    for name, matrix in crossed.items():
        compare(f"{name} vs fp32", f"{name} vs fp32, seed {first}", matrix, sat["fp32", first])
    for a, b in itertools.combinations(seeds, 2):
        compare(
            "fp32 vs fp32, other seed (the attack's noise)",
            f"fp32 seed {a} vs fp32 seed {b}",
            sat["fp32", a],
            sat["fp32", b],
        )
        compare("bf16 vs bf16, other seed", f"bf16 seed {a} vs bf16 seed {b}", sat["bf16", a], sat["bf16", b])
    for a, b in itertools.permutations(seeds, 2):
        compare("bf16 vs fp32, other seed", f"bf16 seed {a} vs fp32 seed {b}", sat["bf16", a], sat["fp32", b])
    print("Spearman by kind of pair (min / mean / max):")
    for group, rhos in groups.items():
        print(f"  {group:<50}{min(rhos):.4f} / {np.mean(rhos):.4f} / {max(rhos):.4f}  ({len(rhos)} pairs)")
    for seed in seeds:
        fp32_s, bf16_s = seconds["fp32", seed], seconds["bf16", seed]
        print(f"time, seed {seed}: fp32 {fp32_s:.1f} s, bf16 {bf16_s:.1f} s ({fp32_s / bf16_s:.2f}x)")


def evaluated(
    attacked: SatRun, precision: str, clean: SatRun, store: CacheStore, args: argparse.Namespace
) -> np.ndarray:
    """The SAT matrix of ``attacked``'s adversarial sets predicted in ``precision``, with ``clean``'s clean
    predictions."""
    transfer = attacked.transfer
    # Every image: the clean predictions that decide X_st come from another precision's run.
    everything = np.ones((len(transfer.adv_keys), len(transfer.labels)), dtype=bool)
    outcome = evaluate_targets(
        args.device,
        store,
        list(zip(transfer.specs, transfer.fingerprints, strict=True)),
        transfer.adv_keys,
        [everything] * len(transfer.specs),
        _image_shape(store, transfer.adv_keys[0]),
        args.batch_size,
        precision,
        args.compile,
    )
    adv_pred = np.stack(outcome.predictions, axis=1)
    mixed = replace(transfer, clean_logits=clean.transfer.clean_logits, adv_pred=adv_pred)
    return sat_tables(mixed.names, mixed.clean_correct, mixed.adv_wrong, n_boot=0).sat.to_numpy()


def _image_shape(store: CacheStore, adv_key: str) -> tuple[int, ...]:
    return tuple(store.open("adv", adv_key).shape("images")[1:])


if __name__ == "__main__":
    main()
