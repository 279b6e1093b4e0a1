"""Attack and evaluation throughput against torchattacks and against the bare loops.

For each model, on the same images, labels and PGD settings:

- archsim's PGD (uint8 in and out, seeded per-image random start, rounding and
  projection onto the integer ball);
- torchattacks' PGD at the same eps, step and steps;
- the limit: a bare loop of forward + input gradient (cross-entropy, no sign
  step, no projection, no bookkeeping) on the same batches;
- evaluation: archsim's batched prediction against a bare ``inference_mode``
  forward loop over the same batches.

Prints image-steps per second (images per second for evaluation), the best of
``--repeats`` timings, and the ratios. Random weights are fine for timm models:
throughput does not depend on the weights.

    python benchmarks/attack.py --n-images 256 --batch-size 128  # zoo models at 32 px (CPU)
    python benchmarks/attack.py --models timm:resnet50,pretrained=false --n-images 16 --batch-size 8 --steps 3 --repeats 2
    python benchmarks/attack.py --models timm:resnet50,pretrained=false timm:vit_small_patch16_224,pretrained=false \\
        --side 224 --n-images 256 --batch-size 128 --steps 10 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import machine

from archsim.attacks import PGD
from archsim.cache import CacheStore
from archsim.models import create_model
from archsim.transfer import predict

DEFAULT_MODELS = ["zoo:resnet-s0", "zoo:vit", "zoo:convnext", "zoo:mobilevit"]


def best_of(repeats: int, fn, sync) -> float:
    fn()  # warm-up: allocator, kernels, lazy initialisation
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return min(times)


def bare_attack_loop(model, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int) -> None:
    for start in range(0, len(x), batch_size):
        batch, labels = x[start : start + batch_size], y[start : start + batch_size]
        for _ in range(steps):
            batch = batch.detach().requires_grad_(True)
            loss = F.cross_entropy(model(batch), labels)
            (grad,) = torch.autograd.grad(loss, batch)


def bare_eval_loop(model, x: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size].to(model.device).float().div_(255.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--side", type=int, default=None, help="image side [default: 32 for zoo models, 224 for others]")
    parser.add_argument("--eps", type=float, default=4 / 255)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torchattacks

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"{machine()}, "
          f"device {args.device}{' ' + torch.cuda.get_device_name() if args.device.startswith('cuda') else ''}; "
          f"{args.n_images} images, batch {args.batch_size}, PGD {args.steps} steps, eps {args.eps:.4f}, best of {args.repeats}")
    print(f"{'model':<34}{'archsim':>10}{'torchatk':>10}{'bare':>10}{' vs torchatk':>13}{' vs bare':>10}{'eval':>10}{'bare eval':>11}{' ratio':>8}")
    generator = torch.Generator().manual_seed(0)
    for spec in args.models:
        model = create_model(spec, cache=CacheStore(), device=args.device)
        side = args.side or (32 if spec.startswith("zoo:") else 224)
        channels = model.preprocess.channels
        images = torch.randint(0, 256, (args.n_images, channels, side, side), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, model.num_outputs, (args.n_images,), generator=generator)
        x, y = images.to(args.device).float() / 255, labels.to(args.device)
        ours = PGD(args.eps, steps=args.steps, rel_step=0.1)
        theirs = torchattacks.PGD(model, eps=args.eps, alpha=0.1 * args.eps, steps=args.steps, random_start=True)

        def run_theirs():
            for start in range(0, len(x), args.batch_size):
                theirs(x[start : start + args.batch_size], y[start : start + args.batch_size])

        work = args.n_images * args.steps
        t_ours = best_of(args.repeats, lambda: ours(model, images, labels, 0, args.batch_size), sync)
        t_theirs = best_of(args.repeats, run_theirs, sync)
        t_bare = best_of(args.repeats, lambda: bare_attack_loop(model, x, y, args.steps, args.batch_size), sync)
        e_ours = best_of(args.repeats, lambda: predict(model, images, args.batch_size), sync)
        e_bare = best_of(args.repeats, lambda: bare_eval_loop(model, images, args.batch_size), sync)
        print(f"{model.name[:33]:<34}{work / t_ours:>10.1f}{work / t_theirs:>10.1f}{work / t_bare:>10.1f}"
              f"{t_theirs / t_ours:>12.2f}x{t_bare / t_ours:>9.2f}x{args.n_images / e_ours:>10.1f}{args.n_images / e_bare:>11.1f}{e_bare / e_ours:>7.2f}x")
    print("attack columns: image-steps/s; eval columns: images/s; ratios > 1 mean archsim is faster")


if __name__ == "__main__":
    main()
