"""The whole SAT pipeline against the naive script an attack-library user writes.

archsim: ``run_sat`` from a cache holding trained weights only (each source attacked
once, each target loaded once and run on every set). Naive: every model loaded up
front, then for every ordered pair (A, B) the attack on A is recomputed and B
evaluated on it, N^2 attacks in all (the same archsim PGD, so both must give the
identical matrix, which is checked).

    python benchmarks/pipeline.py                   # 10 zoo models, 120 digits, paper PGD (50 steps)
    python benchmarks/pipeline.py --n-models 4 --n-images 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, weights_only_cache

from archsim import run_sat
from archsim.api import DIGITS_EPS
from archsim.attacks import PGD
from archsim.cache import CacheStore
from archsim.data import load_data
from archsim.measures import sat_tables
from archsim.models import create_model, zoo_specs
from archsim.transfer import predict


def naive(specs: list[str], images, labels, eps: float, seed: int, batch_size: int, cache: CacheStore) -> np.ndarray:
    models = [create_model(spec, cache=cache) for spec in specs]
    n = len(models)
    clean_correct = np.stack([(predict(m, images, batch_size).argmax(-1) == labels).numpy() for m in models])
    adv_wrong = np.empty((n, n, len(images)), dtype=bool)
    for s, source in enumerate(models):
        for t, target in enumerate(models):
            adversarial = PGD(eps)(source, images, labels, seed, batch_size)  # recomputed for every pair
            adv_wrong[s, t] = (predict(target, adversarial, batch_size).argmax(-1) != labels).numpy()
    return sat_tables([m.name for m in models], clean_correct, adv_wrong, n_boot=0).sat.to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-models", type=int, default=10)
    parser.add_argument("--n-images", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    specs = zoo_specs()[: args.n_models]
    print(f"{machine()}; {len(specs)} zoo models, {args.n_images} digits, PGD 50 steps eps {DIGITS_EPS}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_only_cache(Path(tmp) / "weights", specs)
        images = load_data("digits", n_images=args.n_images, seed=0)

        started = time.perf_counter()
        ours = run_sat(specs, n_images=args.n_images, n_boot=0, batch_size=args.batch_size, cache=CacheStore(weights))
        t_ours = time.perf_counter() - started

        started = time.perf_counter()
        reference = naive(specs, images.images, images.labels, DIGITS_EPS, 0, args.batch_size, CacheStore(weights))
        t_naive = time.perf_counter() - started
    identical = np.array_equal(ours.sat.to_numpy(), reference, equal_nan=True)
    print(f"archsim: {t_ours:7.1f} s ({len(specs)} attacks, {len(specs) ** 2} evaluations)")
    print(f"naive:   {t_naive:7.1f} s ({len(specs) ** 2} attacks)")
    print(f"ratio:   {t_naive / t_ours:7.1f}x faster; identical matrices: {identical}")


if __name__ == "__main__":
    main()
