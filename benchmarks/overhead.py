"""Where archsim's attack loses time against the bare loop: the device's idle gaps and the host's work.

On one model and the same batches:

- unprofiled, best of ``--repeats`` after a warm-up: archsim's PGD against the
  bare forward + input-gradient loop, and the difference per batch;
- the host-side pieces archsim adds per batch, timed alone: drawing the seeded
  random start, copying the uint8 batch in, rounding and copying it back;
- under ``torch.profiler`` (CUDA only): the wall time, the time the device ran
  any kernel or copy, and the longest gaps in which it ran nothing, each with the
  host operations that overlapped it ("Python" where no torch operation did:
  waiting for a random start, the loop's own code).

    python benchmarks/overhead.py --model timm:resnet50,pretrained=false --n-images 1536 --batch-size 256 --steps 5
    --device cuda
    python benchmarks/overhead.py --model zoo:resnet-s0 --n-images 512 --batch-size 128  # CPU: no profile
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import torch
from attack import bare_attack_loop
from common import best_of, machine

from archsim.attacks import PGD
from archsim.attacks.base import (
    NoiseSource,
    copy_to_host,
    noise_workers,
    to_device,
    to_uint8,
    uniform_into,
)
from archsim.cache import CacheStore
from archsim.models import create_model, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="timm:resnet50,pretrained=false")
    parser.add_argument("--n-images", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--side", type=int, default=None, help="image side [default: 32 for zoo models, 224 for others]"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gaps", type=int, default=12, help="idle gaps to list")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()

    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = prepare(create_model(args.model, cache=CacheStore(args.cache), device=args.device))
    side = args.side or (32 if args.model.startswith("zoo:") else 224)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (args.n_images, model.preprocess.channels, side, side), dtype=torch.uint8, generator=generator
    )
    labels = torch.randint(0, model.num_outputs, (args.n_images,), generator=generator)
    x, y = images.to(args.device).float() / 255, labels.to(args.device)
    attack = PGD(4 / 255, steps=args.steps)
    batches = -(-args.n_images // args.batch_size)
    print(
        f"{machine()}, device {args.device}{' ' + torch.cuda.get_device_name() if cuda else ''}; {args.model}, "
        f"{args.n_images} images at {side} px in {batches} batches of {args.batch_size}, PGD {args.steps} steps"
    )

    ours = best_of(args.repeats, lambda: attack(model, images, labels, 0, args.batch_size), sync)
    bare = best_of(args.repeats, lambda: bare_attack_loop(model, x, y, args.steps, args.batch_size), sync)
    print(
        f"archsim {ours:.3f} s, bare loop {bare:.3f} s: {ours / bare:.3f}x the bare time, "
        f"{(ours - bare) / batches * 1000:.1f} ms more per batch"
    )

    first = images[: args.batch_size]
    clean = to_device(first, model.device)
    adv = clean.float() / 255
    workers = noise_workers()
    with ThreadPoolExecutor(workers) as pool:

        def drawn_ahead() -> torch.Tensor:
            noise = NoiseSource(0, range(len(first)), first.shape[1:], args.device, pool if cuda else None)
            noise.prefetch()
            return noise.draw()

        pieces = {
            "random start drawn on one thread": lambda: uniform_into(
                torch.empty(first.shape), 0, range(len(first)), ()
            ),
            f"random start drawn as archsim does ({workers} threads on CUDA) and copied in": drawn_ahead,
            "uint8 batch copied in": lambda: to_device(first, model.device),
            "rounded and copied back": lambda: copy_to_host(to_uint8(adv, clean, attack.eps))(),
        }
        for name, piece in pieces.items():
            print(f"  {name}: {best_of(args.repeats, piece, sync) * 1000:.1f} ms per batch")

    if not cuda:
        return
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        attack(model, images, labels, 0, args.batch_size)
        sync()
    events = prof.events()
    device_spans = _merged(
        sorted((e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA)
    )
    host_ops = [e for e in events if e.device_type == DeviceType.CPU and e.cpu_parent is None]
    begin = min(e.time_range.start for e in host_ops)
    end = max(max(e.time_range.end for e in host_ops), device_spans[-1][1])
    busy = sum(b - a for a, b in device_spans)
    gaps = [(device_spans[0][0] - begin, begin, device_spans[0][0])]
    gaps += [(b0 - a1, a1, b0) for (_, a1), (b0, _) in zip(device_spans, device_spans[1:], strict=False)]
    print(
        f"profiled: wall {(end - begin) / 1e3:.1f} ms, device busy {busy / 1e3:.1f} ms, idle "
        f"{(end - begin - busy) / 1e3:.1f} ms "
        f"({len([g for g in gaps if g[0] > 1000])} gaps over 1 ms)"
    )
    for length, start, stop in sorted(gaps, reverse=True)[: args.gaps]:
        overlap: dict[str, float] = defaultdict(float)
        for e in host_ops:
            shared = min(stop, e.time_range.end) - max(start, e.time_range.start)
            if shared > 0:
                overlap[e.name] += shared
        covered = sum(overlap.values())
        overlap["Python"] = max(length - covered, 0)
        top = ", ".join(
            f"{name} {us / 1e3:.1f}" for name, us in sorted(overlap.items(), key=lambda kv: -kv[1])[:4] if us > 0
        )
        print(f"  gap {length / 1e3:7.1f} ms at {(start - begin) / 1e3:8.1f} ms: {top}")


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, stop in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


if __name__ == "__main__":
    main()
