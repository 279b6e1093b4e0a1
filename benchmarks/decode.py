"""What decoding an image folder costs: archsim's loader, which reads each file once (torchvision's ``read_file``) and
checks and decodes its bytes in memory, against reading it by path, as archsim did before: a PNG was opened and read
by Pillow to verify it, again to load it, and by torchvision's decoder a third time; a JPEG only by the decoder.

The folder holds stand-ins for ImageNet photographs (500x375, smooth shapes and noise), as PNG or JPEG, in the page
cache (each way runs once before the timed rounds); both ways decode to the same pixels, which the script checks.

    python benchmarks/decode.py
    python benchmarks/decode.py --n-images 500 --format jpg
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2.functional as TF
from common import interleaved_best, machine
from torchvision.io import ImageReadMode, decode_image, encode_jpeg, encode_png

from archsim.data import load_data


def by_path(files: list[Path], size: int = 224, crop_pct: float = 0.875) -> np.ndarray:
    """The baseline: Pillow verifies and loads a PNG from its path, then torchvision decodes the path again."""
    out = []
    for file in files:
        if file.suffix == ".png":
            with PIL.Image.open(file) as image:
                image.verify()
            with PIL.Image.open(file) as image:
                image.load()
        image = decode_image(str(file), mode=ImageReadMode.RGB)
        image = TF.resize(
            image, [int(round(size / crop_pct))], interpolation=TF.InterpolationMode.BICUBIC, antialias=True
        )
        out.append(TF.center_crop(image, [size, size]).numpy())
    return np.stack(out)


def photo(rng: np.random.Generator) -> torch.Tensor:
    y, x = np.mgrid[0:375, 0:500]
    image = np.stack([np.sin(x / rng.uniform(20, 80) + c) * np.cos(y / rng.uniform(20, 80)) for c in range(3)])
    image = 127 + 100 * image + rng.normal(0, 12, image.shape)
    return torch.from_numpy(np.clip(image, 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--format", choices=("png", "jpg"), nargs="+", default=["png", "jpg"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    rng = np.random.default_rng(0)
    for fmt in args.format:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for i in range(args.n_images):
                folder = root / f"class{i % 2}"
                folder.mkdir(exist_ok=True)
                image = photo(rng)
                encoded = encode_png(image) if fmt == "png" else encode_jpeg(image, quality=90)
                (folder / f"{i:05d}.{fmt}").write_bytes(encoded.numpy().tobytes())
            files = sorted(root.rglob(f"*.{fmt}"))
            on_disk = sum(f.stat().st_size for f in files)
            ours = load_data(f"imagefolder:{root}").images.numpy()
            assert np.array_equal(ours, by_path(files)), "the two ways decoded different pixels"
            best = interleaved_best(
                args.repeats,
                {
                    "archsim": lambda root=root: load_data(f"imagefolder:{root}"),
                    "by path": lambda files=files: by_path(files),
                },
                lambda: None,
            )
            print(
                f"{fmt}: {len(files)} files, {on_disk / 1e6:.1f} MB; archsim {best['archsim']:.2f} s, by path "
                f"{best['by path']:.2f} s: {best['by path'] / best['archsim']:.2f}x faster"
            )


if __name__ == "__main__":
    main()
