"""How much the two ways of feeding models differ: own views (the SAT paper's protocol, archsim's default) against one
shared pixel space (``--views shared``), on the same models, images, attack and seed.

1. The embedded digits zoo (models of 16, 24 and 32 px on the 32-px digits).
2. timm architectures of the paper at 224, 240 and 256 px with 2-class random heads, on photos of several sizes in
   two classes (made with Pillow, as the tests make them).

For each, the rank correlation of the off-diagonal SAT entries, the largest change of one pair, the white-box
diagonal under each, and what each stores (bytes of the decoded data and of the adversarial sets) and resizes.

    python benchmarks/views.py [--n-images 360] [--steps 50] [--timm-steps 5] [--timm-eps 0.0039] [--photos 32]
        [--skip-digits] [--out benchmarks/results/views]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from common import machine
from scipy.stats import spearmanr

from archsim import run_sat
from archsim.cache import CacheStore
from archsim.models import zoo_specs
from archsim.tests.test_views import photos

TIMM = [
    "timm:resnet50,pretrained=false,num_classes=2,init_seed=1",  # 224, crop 0.95
    "timm:deit_small_patch16_224,pretrained=false,num_classes=2,init_seed=2",  # 224, 0.9
    "timm:fbnetv3_g,pretrained=false,num_classes=2,init_seed=3",  # 240, 0.95, bilinear
    "timm:crossvit_9_240,pretrained=false,num_classes=2,init_seed=4",  # 240, 0.875
    "timm:botnet26t_256,pretrained=false,num_classes=2,init_seed=5",  # 256, 0.95
    "timm:cspresnet50,pretrained=false,num_classes=2,init_seed=6",  # 256, 0.887, bilinear
]


def compare(label: str, runs: dict[str, object], store: CacheStore) -> dict:
    own, shared = runs["own"], runs["shared"]
    names = list(own.sat.index)
    mask = ~np.eye(len(names), dtype=bool)
    a, b = own.sat.to_numpy()[mask], shared.sat.to_numpy()[mask]
    both = np.isfinite(a) & np.isfinite(b)
    rho = spearmanr(a[both], b[both]).statistic if both.sum() >= 3 else float("nan")
    change = np.abs(a[both] - b[both])
    worst = int(np.argmax(change)) if len(change) else None
    pairs = [(s, t) for s in names for t in names if s != t]
    worst_pair = pairs[np.flatnonzero(both)[worst]] if worst is not None else None
    stored = {
        views: {
            "adversarial_bytes": run.config["cost"]["adversarial_bytes"],
            "white_box_mean_pct": float(run.models.white_box_success.mean()),
        }
        for views, run in runs.items()
    }
    floored = {views: float((run.sat.to_numpy()[mask] == 0).mean()) for views, run in runs.items()}
    return {
        "zoo": label,
        "own_floored_share": floored["own"],
        "shared_floored_share": floored["shared"],
        "models": len(names),
        "pairs_defined_in_both": int(both.sum()),
        "spearman": float(rho),
        "largest_change": float(change.max()) if len(change) else float("nan"),
        "largest_change_pair": " -> ".join(worst_pair) if worst_pair else "",
        "mean_abs_change": float(change.mean()) if len(change) else float("nan"),
        "own_white_box_pct": stored["own"]["white_box_mean_pct"],
        "shared_white_box_pct": stored["shared"]["white_box_mean_pct"],
        "own_adversarial_MB": stored["own"]["adversarial_bytes"] / 1e6,
        "shared_adversarial_MB": stored["shared"]["adversarial_bytes"] / 1e6,
        "decoded_data_MB": sum(p.stat().st_size for p in (store.root / "data").rglob("*.bin")) / 1e6
        if (store.root / "data").is_dir()
        else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=360, help="digits images")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--timm-steps", type=int, default=5)
    parser.add_argument("--timm-eps", type=float, default=1 / 255, help="random 2-class heads flip at 4/255 already")
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--cache", type=Path, default=None, help="a cache with the trained zoo [default: archsim's]")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(machine())
    rows, matrices = [], {}
    store = CacheStore(args.cache) if args.cache else CacheStore()
    if not args.skip_digits:
        digits = {
            views: run_sat(zoo_specs(), n_images=args.n_images, steps=args.steps, n_boot=0, cache=store, views=views)
            for views in ("own", "shared")
        }
        rows.append(compare("digits zoo (16/24/32 px)", digits, CacheStore(tempfile.mkdtemp())))
        matrices["digits"] = digits
    with tempfile.TemporaryDirectory() as tmp:
        photos(Path(tmp) / "set", args.photos)
        timm_store = CacheStore(Path(tmp) / "cache")
        timm_runs = {
            views: run_sat(
                TIMM,
                data=f"imagefolder:{Path(tmp) / 'set'}",
                steps=args.timm_steps,
                eps=args.timm_eps,
                n_boot=0,
                cache=timm_store,
                views=views,
            )
            for views in ("own", "shared")
        }
        label = f"timm 224/240/256 px, 2-class random heads, {args.photos} photos, eps {round(args.timm_eps * 255)}/255"
        rows.append(compare(label, timm_runs, timm_store))
        matrices["timm"] = timm_runs
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "views.csv", index=False, float_format="%.6g")
        for label, runs in matrices.items():
            for views, run in runs.items():
                run.sat.to_csv(args.out / f"sat_{label}_{views}.csv", float_format="%.6g")


if __name__ == "__main__":
    main()
