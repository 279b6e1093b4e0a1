"""Attack and evaluation throughput against torchattacks and against the bare loops.

For each model, on the same images, labels and PGD settings:

- torchattacks' PGD in fp32 on the model as loaded: what a user of an attack
  library gets, the baseline of every "vs torchattacks" ratio;
- the limit: a bare loop of forward + input gradient (cross-entropy, no sign
  step, no projection, no bookkeeping) on the same batches, once per precision,
  on the model as archsim prepares it;
- archsim's PGD (uint8 in and out, seeded per-image random start, rounding and
  projection onto the integer ball) per precision after
  :func:`archsim.models.prepare`, for CNNs also in the other memory layout
  (channels-last or contiguous), and with ``--compile`` also through ``torch.compile``;
- evaluation: archsim's batched prediction against a bare ``inference_mode``
  forward loop over the same batches, per precision.

Prints image-steps per second (images per second for evaluation), the best of
``--repeats`` timings after one warm-up, and the ratios. The contestants of a model
are timed in interleaved rounds, so that a slow moment of the machine falls on all.
Random weights are fine for timm models: throughput does not depend on the weights.

    python benchmarks/attack.py --n-images 256 --batch-size 128  # zoo models at 32 px (CPU)
    python benchmarks/attack.py --models timm:resnet50,pretrained=false --n-images 16 --batch-size 8 --steps 3 --repeats
    2
    python benchmarks/attack.py --models timm:resnet50,pretrained=false timm:vit_small_patch16_224,pretrained=false \\
        --n-images 512 --batch-size 256 --steps 10 --device cuda --compile
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F
from common import interleaved_best, machine

from archsim.attacks import PGD
from archsim.cache import CacheStore
from archsim.models import (
    SimModel,
    convolutional,
    create_model,
    precision_context,
    prepare,
)
from archsim.transfer import predict

DEFAULT_MODELS = ["zoo:resnet-s0", "zoo:vit", "zoo:convnext", "zoo:mobilevit"]


def bare_attack_loop(model: SimModel, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int) -> None:
    for start in range(0, len(x), batch_size):
        batch, labels = x[start : start + batch_size], y[start : start + batch_size]
        for _ in range(steps):
            batch = batch.detach().requires_grad_(True)
            loss = F.cross_entropy(model(batch), labels)
            (grad,) = torch.autograd.grad(loss, batch)


def bare_eval_loop(model: SimModel, images: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].to(model.device).float().div_(255.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--side", type=int, default=None, help="image side [default: 32 for zoo models, 224 for others]"
    )
    parser.add_argument("--eps", type=float, default=4 / 255)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=None,
        help="[default: fp32 on the CPU, fp32 and bf16 on CUDA]",
    )
    parser.add_argument("--compile", action="store_true", help="also time archsim with torch.compile, per precision")
    parser.add_argument("--cache", default=None, help="cache holding the zoo weights [default: the user's]")
    args = parser.parse_args()
    import torchattacks

    cuda = args.device.startswith("cuda")
    precisions = args.precisions or (["fp32", "bf16"] if cuda else ["fp32"])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # For every variant, the baseline included: archsim's prepare() turns it on, and the ratios should show the loops.
    torch.backends.cudnn.benchmark = cuda
    print(
        f"{machine()}, device {args.device}{' ' + torch.cuda.get_device_name() if cuda else ''}; "
        f"{args.n_images} images, batch {args.batch_size}, PGD {args.steps} steps, eps {args.eps:.4f}, best of "
        f"{args.repeats}"
    )
    rows = []
    generator = torch.Generator().manual_seed(0)
    for spec in args.models:
        model = create_model(spec, cache=CacheStore(args.cache), device=args.device)
        side = args.side or (32 if spec.startswith("zoo:") else 224)
        images = torch.randint(
            0, 256, (args.n_images, model.preprocess.channels, side, side), dtype=torch.uint8, generator=generator
        )
        labels = torch.randint(0, model.num_outputs, (args.n_images,), generator=generator)
        x, y = images.to(args.device).float() / 255, labels.to(args.device)
        work = args.n_images * args.steps
        ours = PGD(args.eps, steps=args.steps, rel_step=0.1)
        theirs = torchattacks.PGD(model, eps=args.eps, alpha=0.1 * args.eps, steps=args.steps, random_start=True)

        def run_theirs(x: torch.Tensor = x, y: torch.Tensor = y, theirs: torchattacks.Attack = theirs) -> None:
            for start in range(0, len(x), args.batch_size):
                theirs(x[start : start + args.batch_size], y[start : start + args.batch_size])

        def in_precision(precision: str, fn: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                with precision_context(args.device, precision):
                    return fn()

            return run

        def fresh(spec: str = spec) -> SimModel:
            return create_model(spec, cache=CacheStore(args.cache), device=args.device)

        # label -> (function, precision); attacks are timed as image-steps, evaluations as images.
        attacks: dict[str, tuple[Callable[[], object], str]] = {"torchattacks fp32": (run_theirs, "fp32")}
        evaluations: dict[str, tuple[Callable[[], object], str]] = {}
        for precision in precisions:
            prepared = prepare(fresh(), precision)
            variants = [(f"archsim {precision}", prepared)]
            if convolutional(prepared):
                flipped = prepare(fresh(), precision, channels_last=not prepared.channels_last)
                layout = "channels-last" if flipped.channels_last else "contiguous"
                variants.append((f"archsim {precision} {layout}", flipped))
                evaluations[f"eval {precision} {layout}"] = (
                    lambda m=flipped, images=images: predict(m, images, args.batch_size),
                    precision,
                )
            if args.compile:
                compiled = prepare(fresh(), precision, compile=True)
                variants.append(
                    (f"archsim {precision} compiled{' channels-last' if compiled.channels_last else ''}", compiled)
                )
                if compiled.channels_last:
                    variants.append(
                        (
                            f"archsim {precision} compiled contiguous",
                            prepare(fresh(), precision, compile=True, channels_last=False),
                        )
                    )
            for label, variant in variants:
                attacks[label] = (
                    lambda m=variant, ours=ours, images=images, labels=labels: ours(
                        m, images, labels, 0, args.batch_size
                    ),
                    precision,
                )
            attacks[f"bare loop {precision}"] = (
                lambda m=prepared, x=x, y=y: bare_attack_loop(m, x, y, args.steps, args.batch_size),
                precision,
            )
            evaluations[f"eval {precision}"] = (
                lambda m=prepared, images=images: predict(m, images, args.batch_size),
                precision,
            )
            evaluations[f"bare eval {precision}"] = (
                lambda m=prepared, images=images: bare_eval_loop(m, images, args.batch_size),
                precision,
            )
        contestants = {
            label: in_precision(precision, fn) for label, (fn, precision) in {**attacks, **evaluations}.items()
        }
        best = interleaved_best(args.repeats, contestants, sync)
        name = model.name[:30]
        theirs_rate = work / best["torchattacks fp32"]
        for label in attacks:
            precision = attacks[label][1]
            rate = work / best[label]
            # torchattacks has no bare loop of its own when fp32 is not among --precisions
            bare = best.get(f"bare loop {precision}") if not label.startswith("torchattacks") else None
            rows.append((name, label, rate, rate / theirs_rate, float("nan") if bare is None else bare / best[label]))
        for label, (_, precision) in evaluations.items():
            if not label.startswith("bare"):
                ours_e, bare_e = args.n_images / best[label], args.n_images / best[f"bare eval {precision}"]
                rows.append((name, f"{label} (bare {bare_e:.0f}/s)", ours_e, float("nan"), ours_e / bare_e))
    print(f"{'model':<31}{'variant':<30}{'rate':>11}{'vs torchattacks':>17}{'vs bare':>9}")
    for name, variant, rate, vs_theirs, vs_bare in rows:
        print(f"{name:<31}{variant:<30}{rate:>11.1f}{vs_theirs:>16.2f}x{vs_bare:>8.2f}x")
    print(
        "rate: image-steps/s for attacks, images/s for eval; vs bare: against the bare loop of the same precision "
        "(for eval, the bare inference loop)"
    )


if __name__ == "__main__":
    main()
