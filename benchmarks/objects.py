"""What handing archsim objects costs: modules given in Python and images in a tensor, against the spec path.

Models: ``object_spec`` (a CPU copy and the content fingerprint) plus building the
model from its spec in a task (a second copy), against ``create_model("timm:NAME")``
(build and fingerprint), both with random weights. Data: ``memory_spec`` of a uint8
tensor (hash and one write into the cache), against what a user had to do before:
``np.savez`` the arrays and read them back through ``npz:`` (which hashes the file
and writes the set into the cache).

    python benchmarks/objects.py
    python benchmarks/objects.py --models resnet50 vit_base_patch16_224 --n-images 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from common import machine

from archsim.cache import CacheStore
from archsim.data import load_data, memory_spec
from archsim.models import create_model, object_spec


def seconds(work) -> tuple[float, object]:
    started = time.perf_counter()
    value = work()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_base_patch16_224"])
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    print(machine())
    print("model                      spec path s   object path s (given + built)   ratio")
    for name in args.models:
        spec_s, by_spec = seconds(lambda name=name: create_model(f"timm:{name},pretrained=false"))
        by_spec.fingerprint  # noqa: B018 - computed in every task; part of the spec path's cost
        spec_s += seconds(lambda by_spec=by_spec: by_spec.fingerprint)[0]
        with torch.random.fork_rng():  # the weights timm:NAME,pretrained=false draws (init_seed 0)
            torch.manual_seed(0)
            net = timm.create_model(name, pretrained=False)  # the user's module (not timed: it exists already)
        given_s, spec = seconds(lambda net=net, name=name: object_spec(net, name))
        built_s, built = seconds(lambda spec=spec: create_model(spec))
        built_s += seconds(lambda built=built: built.fingerprint)[0]
        assert built.fingerprint == by_spec.fingerprint  # the same network: the same cache entries
        total = given_s + built_s
        parts = f"{total:8.2f} ({given_s:.2f} + {built_s:.2f})"
        print(f"{name:26s} {spec_s:10.2f}   {parts:32s} {total / spec_s:5.2f}")
    images = torch.randint(0, 256, (args.n_images, 3, args.size, args.size), dtype=torch.uint8)
    labels = torch.arange(args.n_images) % 1000
    with tempfile.TemporaryDirectory() as tmp:
        store = CacheStore(Path(tmp) / "cache")
        memory_s, key = seconds(lambda: memory_spec((images, labels, 1000), store))
        again_s, _ = seconds(lambda: load_data(key, store=store))
        path = Path(tmp) / "images.npz"

        def through_npz():
            np.savez(path, images=images.numpy(), labels=labels.numpy())
            return load_data(f"npz:{path}", store=store)

        npz_s, _ = seconds(through_npz)
    megabytes = images.numel() / 2**20
    print(
        f"data: {args.n_images} images of {args.size} px ({megabytes:.0f} MiB): memory_spec {memory_s:.2f} s, "
        f"read back {again_s:.2f} s; np.savez + npz: {npz_s:.2f} s; ratio {memory_s / npz_s:.2f}"
    )


if __name__ == "__main__":
    main()
