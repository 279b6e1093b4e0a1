"""The measures' arithmetic on their per-image values against the direct formulas, in one run.

- **boundary gap**: ``boundary_gap`` against the gaps along every source model's
  directions, [N, N, N, M], from which the pair's own two are then picked (what the
  code did until 2026-11-23);
- **CKA resample** (the comparison table's 200 draws): ``linear_cka`` with each
  image weighted by its draw count against CKA of the drawn rows themselves;
- **SAT bootstrap** (``sat_tables``, every run): the replicate counts summed a
  chunk of images at a time against one chunk of all images (what the code did
  until 2026-11-23: the [N, N, M] masks cast to float64 whole).

Each prints seconds and the peak of numpy's allocations (``tracemalloc``), the
ratios, and whether the results agree (the gap and SAT bit for bit; CKA to 1e-9).

    python benchmarks/measures.py        # gap 30 models x 2,000 images; CKA 2,000 x 512, 102x draws; SAT 69 x 10,000
    python benchmarks/measures.py --models 60 --images 1000 --width 256 --resamples 2 --sat-images 50000
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any, Callable

import numpy as np
from common import machine

from archsim.measures import linear_cka, sat
from archsim.measures.boundary import boundary_gap


def every_source_gap(distances: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The direct formula: |d_a - d_b| along every source's directions, then the pair's own two sources."""
    gap_own = np.abs(distances[:, :, None, :] - distances[:, None, :, :])  # [s, a, b, M] along s
    idx = np.arange(distances.shape[0])
    along_a = gap_own[idx[:, None], idx[:, None], idx[None, :]]
    along_b = gap_own[idx[None, :], idx[:, None], idx[None, :]]
    return np.where(valid, (along_a + along_b) / 2, np.nan)


def measured(work: Callable[[], Any]) -> tuple[Any, float, float]:
    """Result, seconds, and peak MiB of the numpy (and Python) allocations made by ``work``."""
    tracemalloc.start()
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def report(name: str, fast: tuple[Any, float, float], direct: tuple[Any, float, float], same: bool) -> None:
    print(
        f"{name}: archsim {fast[1]:.3f} s, {fast[2]:.0f} MiB; direct {direct[1]:.3f} s, {direct[2]:.0f} MiB; "
        f"{direct[1] / fast[1]:.1f}x faster, {direct[2] / max(fast[2], 1e-9):.1f}x less memory; agree: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=30, help="models of the boundary gap")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--width", type=int, default=512, help="feature width of the CKA pair")
    parser.add_argument(
        "--draw-factor", type=int, default=102, help="rows drawn per image (102 at the default PGD-50 settings)"
    )
    parser.add_argument("--resamples", type=int, default=3, help="CKA draws timed")
    parser.add_argument("--sat-models", type=int, default=69, help="models of the SAT bootstrap (1,000 replicates)")
    parser.add_argument("--sat-images", type=int, default=10000)
    args = parser.parse_args()
    print(
        f"{machine()}; gap: {args.models} models x {args.images} images; CKA features {args.images} x {args.width}, "
        f"{args.resamples} draws of {args.draw_factor} x {args.images} rows; SAT: {args.sat_models} models x "
        f"{args.sat_images} images"
    )
    rng = np.random.default_rng(0)

    distances = rng.random((args.models, args.models, args.images))
    distances[rng.random(distances.shape) < 0.1] = np.nan  # targets that never crossed within reach
    valid = rng.random(distances.shape) < 0.9
    fast = measured(lambda: boundary_gap(distances, valid))
    direct = measured(lambda: every_source_gap(distances, valid))
    report("boundary gap", fast, direct, bool(np.array_equal(fast[0], direct[0], equal_nan=True)))

    x = rng.normal(size=(args.images, args.width)).astype(np.float32)
    y = (
        x[:, : args.width // 2] @ rng.normal(size=(args.width // 2, args.width))
        + rng.normal(size=(args.images, args.width))
    ).astype(np.float32)
    draws = [rng.integers(0, args.images, size=args.draw_factor * args.images) for _ in range(args.resamples)]
    fast = measured(lambda: [linear_cka(x, y, weights=np.bincount(d, minlength=args.images)) for d in draws])
    direct = measured(lambda: [linear_cka(x[d], y[d]) for d in draws])
    report("CKA resample", fast, direct, bool(np.allclose(fast[0], direct[0], rtol=1e-9, atol=0)))

    n, m = args.sat_models, args.sat_images
    correct, wrong = rng.random((n, m)) < 0.8, rng.random((n, n, m)) < 0.3
    names = [f"m{i}" for i in range(n)]
    fast = measured(lambda: sat.sat_tables(names, correct, wrong, n_boot=1000).pairs)
    chunk, sat.BOOTSTRAP_CHUNK_BYTES = sat.BOOTSTRAP_CHUNK_BYTES, 1 << 62  # one chunk: every image at once
    direct = measured(lambda: sat.sat_tables(names, correct, wrong, n_boot=1000).pairs)
    sat.BOOTSTRAP_CHUNK_BYTES = chunk
    report("SAT bootstrap", fast, direct, bool(fast[0].equals(direct[0])))


if __name__ == "__main__":
    main()
