"""What each model sees equals what its own library's evaluation transform makes of the file.

The reference is the library itself: ``timm.data.create_transform(**resolve_data_config(model=net))`` (or the
torchvision weights' ``transforms()``) on the file opened by Pillow, as timm's image dataset opens it. archsim's side
is the whole path a run takes: the folder loaded with own views, the model's view decoded into the cache, and the
model's preprocessing up to the network's input. Photos of several sizes and aspect ratios (one smaller than every
crop, one grey, one PNG with an alpha channel) are made with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import timm
import torch
import torchvision

from archsim.cache import CacheStore
from archsim.data import load_data
from archsim.models import create_model
from archsim.models.wrapper import SimModel

PAPER_MODELS = Path(__file__).resolve().parents[2] / "zoos" / "sat-paper.txt"
SIZES = [(375, 500), (500, 333), (224, 224), (180, 260), (640, 480), (256, 1024), (301, 299)]
"""Height x width of the photos: ImageNet's usual landscape and portrait, square, smaller than any crop, 4:3, a
panorama, and odd sides (a crop offset that rounds)."""
TOLERANCE = 1 / 255
SHARE = 0.99
"""The agreement asked for: within one level of 255 on at least 99 % of the values."""


def photos(root: Path, count: int = len(SIZES) + 2) -> list[Path]:
    """``count`` JPEGs (one grey, one PNG with alpha among the first nine) of smooth shapes and noise, in two class
    folders; the files in the loader's order."""
    rng = np.random.default_rng(0)
    files = []
    shapes = SIZES + [(333, 500), (400, 300)]
    for i, (height, width) in enumerate(shapes[i % len(shapes)] for i in range(count)):
        y, x = np.mgrid[0:height, 0:width]
        image = np.stack([np.sin(x / rng.uniform(5, 60) + c) * np.cos(y / rng.uniform(5, 60)) for c in range(3)], -1)
        image = np.clip(127 + 100 * image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        if i == len(SIZES):  # grey: convert("RGB") repeats the channel
            file = folder / f"{i:02d}.jpg"
            PIL.Image.fromarray(image[..., 0]).save(file, quality=90)
        elif i == len(SIZES) + 1:  # RGBA PNG: convert("RGB") drops the alpha
            file = folder / f"{i:02d}.png"
            PIL.Image.fromarray(np.concatenate([image, image[..., :1]], -1), "RGBA").save(file)
        else:
            file = folder / f"{i:02d}.jpg"
            PIL.Image.fromarray(image).save(file, quality=90)
    for folder in sorted(root.iterdir()):
        files += sorted(folder.iterdir())
    return files


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[Path], CacheStore]:
    root = tmp_path_factory.mktemp("photos")
    files = photos(root / "set")
    return root / "set", files, CacheStore(root / "cache")


def archsim_inputs(model: SimModel, root: Path, store: CacheStore) -> torch.Tensor:
    """The network's clean input in a run with own views, in [0, 1] pixels (the normalisation undone)."""
    data = load_data(f"imagefolder:{root}", store=store, views="own")
    seen = data.seen_by(model.preprocess.view, store)
    assert tuple(seen.images.shape[-2:]) == model.preprocess.input_size[1:]  # attacked at its own size, no resize
    with torch.no_grad():
        normalised = model.preprocess(torch.cat(list(seen.batches(4))).float() / 255)
    return normalised * model.preprocess.std + model.preprocess.mean


def timm_inputs(net: torch.nn.Module, files: list[Path]) -> tuple[torch.Tensor, dict]:
    config = timm.data.resolve_data_config(model=net)
    transform = timm.data.create_transform(**config)
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    with_pil = [transform(PIL.Image.open(file).convert("RGB")) for file in files]
    return torch.stack([x * std + mean for x in with_pil]), config


def agreement(ours: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    diff = (ours - reference).abs()
    return {
        "max_levels": float(diff.max()) * 255,
        "mean_levels": float(diff.mean()) * 255,
        "within": float((diff <= TOLERANCE + 1e-6).float().mean()),
    }


def check_timm(name: str, root: Path, files: list[Path], store: CacheStore) -> dict:
    model = create_model(f"timm:{name},pretrained=false,num_classes=2", cache=store)
    ours = archsim_inputs(model, root, store)
    reference, config = timm_inputs(model.net, files)
    found = agreement(ours, reference)
    found.update(
        model=name,
        input_size=config["input_size"][1],
        crop_pct=config["crop_pct"],
        interpolation=config["interpolation"],
    )
    return found


@pytest.mark.parametrize(
    "name",
    [
        "resnet50",  # 224, crop 0.95
        "crossvit_9_240",  # 240, 0.875
        "fbnetv3_g",  # 240, 0.95, bilinear
        "cspresnet50",  # 256, 0.887, bilinear
        "sebotnet33ts_256",  # 256, 0.94
        "xcit_tiny_12_p8_224",  # 224, 1.0: no crop
        "resnest50d",  # 224, 0.875, bilinear
    ],
)
def test_a_timm_model_sees_what_timm_shows_it(name, folder):
    found = check_timm(name, *folder)
    assert found["within"] >= SHARE and found["max_levels"] <= 1.0 + 1e-3, found


@pytest.mark.parametrize("name", ["resnet50", "vit_b_16", "efficientnet_b3"])
def test_a_torchvision_model_sees_what_its_weights_transforms_show_it(name, folder):
    root, files, store = folder
    model = create_model(f"torchvision:{name},pretrained=false", cache=store)
    ours = archsim_inputs(model, root, store)
    transform = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    mean, std = torch.tensor(transform.mean).view(3, 1, 1), torch.tensor(transform.std).view(3, 1, 1)
    reference = torch.stack([transform(PIL.Image.open(file).convert("RGB")) * std + mean for file in files])
    found = agreement(ours, reference)
    assert found["within"] >= SHARE and found["max_levels"] <= 1.0 + 1e-3, found


@pytest.mark.parametrize("crop_mode", ["squash", "border"])
def test_timms_other_crop_modes_as_timm_makes_them(crop_mode, folder):
    """A module given in Python with a timm-style preprocessing dict: squash and border crops as timm's
    ``transforms_imagenet_eval`` makes them."""
    from archsim.models.objects import object_spec

    root, files, store = folder
    config = {"input_size": (3, 160, 192), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "crop_pct": 0.8}
    spec = object_spec(torch.nn.Conv2d(3, 2, 1), name=f"m-{crop_mode}", preprocess={**config, "crop_mode": crop_mode})
    model = create_model(spec, cache=store)
    ours = archsim_inputs(model, root, store)
    transform = timm.data.transforms_factory.transforms_imagenet_eval(
        img_size=(160, 192),
        crop_pct=0.8,
        crop_mode=crop_mode,
        interpolation="bilinear",
        mean=config["mean"],
        std=config["std"],
    )
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    reference = torch.stack([transform(PIL.Image.open(file).convert("RGB")) * std + mean for file in files])
    found = agreement(ours, reference)
    assert found["within"] >= SHARE and found["max_levels"] <= 1.0 + 1e-3, found


def test_shared_views_feed_every_model_one_stored_crop(folder):
    """The other choice, kept as an option: every model resizes the one stored 224-px crop in its forward, so a
    256-px model sees an upsampled 224-px crop, unlike timm's view of the file."""
    root, files, store = folder
    model = create_model("timm:sebotnet33ts_256,pretrained=false,num_classes=2", cache=store)
    shared = load_data(f"imagefolder:{root}", store=store, views="shared")
    assert shared.seen_by(model.preprocess.view, store) is shared and tuple(shared.images.shape[-2:]) == (224, 224)
    with torch.no_grad():
        fed = model.preprocess(shared.images.rows(np.arange(len(files))).float() / 255)
    fed = fed * model.preprocess.std + model.preprocess.mean
    reference, _ = timm_inputs(model.net, files)
    assert agreement(fed, reference)["within"] < 0.5  # most values differ by more than a level


@pytest.mark.scale
def test_every_paper_architecture_sees_what_timm_shows_it(folder, tmp_path):
    """All of the SAT paper's architectures (random weights); the table goes to BENCHMARKS.md."""
    import pandas as pd

    names = [
        line.split(":", 1)[1].split(",")[0] for line in PAPER_MODELS.read_text().splitlines() if line[:5] == "timm:"
    ]
    assert len(names) == 68
    rows = [check_timm(name, *folder) for name in names]
    table = pd.DataFrame(rows).sort_values("max_levels", ascending=False)
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print("\nclean network input against timm's create_transform (levels of 255):")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    worst = table.iloc[0]
    print(f"worst: {worst.model}, max {worst.max_levels:.4f}, mean {worst.mean_levels:.6f} levels")
    bad = table[(table.within < SHARE) | (table.max_levels > 1.0 + 1e-3)]
    assert bad.empty, bad.to_string()
