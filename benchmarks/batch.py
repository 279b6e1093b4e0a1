"""``--batch-size auto`` against fixed batch sizes, measured in one run.

For each model, on the same random images and labels: the search of
``--batch-size auto`` (its time and the sizes it picks for the attack and for
evaluation, searched afresh, not read from a cache), then archsim's PGD and its
evaluation at the picked sizes and at each ``--fixed`` size (default 128, the
default before ``auto``). Prints image-steps per second (images per second for
evaluation), the best of ``--repeats`` timings after one warm-up, the ratio of
``auto`` to each fixed size, and the peak memory of one attack pass (CPU: the
process's resident peak on Linux; CUDA: the allocator's peak).

    python benchmarks/batch.py  # zoo models on 360 images of 32 px, the digits as stored (CPU)
    python benchmarks/batch.py --models timm:resnet50,pretrained=false timm:vit_small_patch16_224,pretrained=false \\
        --n-images 128 --steps 2 --repeats 1
    python benchmarks/batch.py --models timm:resnet50,pretrained=false --n-images 4096 --steps 5 --device cuda --fixed
    128 256
"""

from __future__ import annotations

import argparse
import time

import torch
from common import best_of, machine

from archsim.attacks import PGD
from archsim.cache import CacheStore
from archsim.models import SimModel, create_model, prepare
from archsim.transfer import predict
from archsim.transfer.batching import batch_size_for, peak_memory

DEFAULT_MODELS = ["zoo:resnet-s0", "zoo:vit", "zoo:convnext", "zoo:mobilevit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--n-images", type=int, default=360)
    parser.add_argument(
        "--side",
        type=int,
        default=None,
        help="image side [default: 32 for zoo models (the digits as stored), 224 for others]",
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--fixed", type=int, nargs="+", default=[128], help="fixed batch sizes to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", default=None, help="cache holding the zoo weights [default: the user's]")
    args = parser.parse_args()

    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    print(
        f"{machine()}, device {args.device}{' ' + torch.cuda.get_device_name() if cuda else ''}; "
        f"{args.n_images} images, PGD {args.steps} steps, best of {args.repeats}"
    )
    generator = torch.Generator().manual_seed(0)
    for spec in args.models:
        model = prepare(create_model(spec, cache=CacheStore(args.cache), device=args.device))
        side = args.side or (32 if spec.startswith("zoo:") else 224)
        images = torch.randint(
            0, 256, (args.n_images, model.preprocess.channels, side, side), dtype=torch.uint8, generator=generator
        )
        labels = torch.randint(0, model.num_outputs, (args.n_images,), generator=generator)
        attack = PGD(eps=4 / 255, steps=args.steps)

        started = time.perf_counter()
        chosen = {
            purpose: batch_size_for(model, "auto", purpose, tuple(images.shape[1:]), len(images))
            for purpose in ("attack", "evaluate")
        }
        search_seconds = time.perf_counter() - started

        def rates(
            attack_batch: int,
            eval_batch: int,
            model: SimModel = model,
            attack: PGD = attack,
            images: torch.Tensor = images,
            labels: torch.Tensor = labels,
        ) -> tuple[float, float, float | None]:
            attack_rate = (
                args.n_images
                * args.steps
                / best_of(args.repeats, lambda: attack(model, images, labels, 0, attack_batch), sync)
            )
            eval_rate = args.n_images / best_of(args.repeats, lambda: predict(model, images, eval_batch), sync)
            peak = peak_memory(model.device, lambda: attack(model, images, labels, 0, attack_batch))
            return attack_rate, eval_rate, None if peak is None else peak / 2**20

        auto = rates(chosen["attack"], chosen["evaluate"])
        print(
            f"\n{spec} ({side} px): auto picks attack {chosen['attack']}, evaluation {chosen['evaluate']} "
            f"(searched in {search_seconds:.1f} s)"
        )
        print(
            "| batch | attack image-steps/s | evaluation images/s | attack peak MiB | auto vs this: attack | "
            "evaluation |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        print(f"| auto | {auto[0]:.1f} | {auto[1]:.1f} | {_mib(auto[2])} | | |")
        for size in args.fixed:
            fixed = rates(size, size)
            print(
                f"| {size} | {fixed[0]:.1f} | {fixed[1]:.1f} | {_mib(fixed[2])} | {auto[0] / fixed[0]:.2f}x | "
                f"{auto[1] / fixed[1]:.2f}x |"
            )


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    main()
