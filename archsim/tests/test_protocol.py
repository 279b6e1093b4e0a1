"""The paper's protocol as defaults: pinned weights recorded, extra-data defaults warned of, the radius in whole
levels, and the attack made at the source's own resolution."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from archsim import run_sat
from archsim.attacks.base import to_uint8
from archsim.cache import CacheStore
from archsim.data import load_data
from archsim.errors import ParameterError
from archsim.models import check_model_specs, create_model
from archsim.specs import whole_levels
from archsim.tests.test_views import photos

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT.parent / "shared" / "data" / "sat_release" / "SAT_release.csv"


def test_a_radius_between_levels_is_rounded_to_the_nearest_and_said():
    assert whole_levels(4 / 255) == (4 / 255, None)
    radius, note = whole_levels(0.03)  # 7.65 levels: floored, it was 7 before, silently
    assert radius == 8 / 255 and note.startswith("eps 0.03 is 7.65 levels of 1/255") and "8/255" in note
    with pytest.raises(ParameterError, match="rounds to none"):
        whole_levels(0.001)
    # The uint8 projection keeps the whole levels inside a radius (an Attack made in Python with such an eps).
    clean = torch.tensor([100], dtype=torch.uint8)
    assert to_uint8(torch.tensor([1.0]), clean, 0.03).item() == 107


def test_the_paper_zoo_names_pinned_tags_under_the_published_names():
    lines = [line for line in (ROOT / "zoos" / "sat-paper.txt").read_text().splitlines() if line.startswith("timm:")]
    assert len(lines) == 68
    names = []
    for line in lines:
        target, *options = line.removeprefix("timm:").split(",")
        arch, _, tag = target.partition(".")
        assert (
            tag
            and tag in timm.models.get_arch_pretrained_cfgs(arch)
            or f"{arch}.{tag}" in (timm.models.get_arch_pretrained_cfgs(arch))
        ), line
        names.append(dict(option.split("=") for option in options)["name"])
    published = pd.read_csv(PUBLISHED, index_col=0).index
    assert set(published) - set(names) == {"gluon_xception65"} and len(set(names)) == 68
    weights = pd.read_csv(ROOT / "zoos" / "sat-paper-weights.csv")
    # Checked by hand: 0.6.7's convnext_tiny is the fb_in1k file, its regnetx_320 the ported pycls weights.
    pinned = weights.set_index("paper_name").tag
    assert pinned["convnext_tiny"] == "convnext_tiny.fb_in1k" and pinned["regnetx_320"] == "regnetx_320.pycls_in1k"


def test_an_untagged_name_whose_default_saw_extra_data_warns_with_the_in1k_tag():
    with pytest.warns(
        UserWarning, match=r"timm:convnext_tiny loads convnext_tiny\.in12k_ft_in1k.*timm:convnext_tiny\."
    ):
        check_model_specs(["timm:convnext_tiny"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model_specs(["timm:convnext_tiny.fb_in1k", "timm:convnext_tiny,pretrained=false", "timm:resnet18"])


def test_the_weights_a_model_holds_are_recorded(tmp_path):
    net = timm.create_model("resnet18", pretrained=False, num_classes=3)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    digest = hashlib.sha256((tmp_path / "weights.pt").read_bytes()).hexdigest()
    from_file = create_model(f"timm:resnet18.a1_in1k,checkpoint={tmp_path / 'weights.pt'},num_classes=3")
    assert from_file.info["weights_tag"] == "resnet18.a1_in1k" and from_file.info["weights_sha256"] == digest
    assert from_file.info["hub_id"] == "timm/resnet18.a1_in1k"
    random = create_model("timm:resnet18,pretrained=false,num_classes=3")
    assert random.info["weights_sha256"] == "" and random.info["weights_tag"] == "resnet18.a1_in1k"
    # 0.6.7's crop, kept by the pinned zoo where timm 1.0 changed it: the view changes, the fingerprint with it.
    cropped = create_model("timm:resnet18,pretrained=false,num_classes=3,crop_pct=1.0")
    assert cropped.preprocess.view.resize == (224, 224) and random.preprocess.view.resize == (235, 235)
    assert cropped.fingerprint != random.fingerprint


def small_net(seed: int) -> torch.nn.Module:
    """A small classifier of 2 classes that takes any size (convolutions, then global pooling)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, stride=4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )


def test_each_source_attacks_at_its_own_resolution_and_targets_resize(tmp_path):
    """Models of 224 and 256 px with timm-style views on photos in two classes: the adversarial sets are stored at
    each source's size, X_AB uses each model's prediction on its own view, models.csv records the views, and the
    shared storage no model reads is never decoded."""
    photos(tmp_path / "set")
    imagenet = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}
    models = {
        "at224": (small_net(1), {**imagenet, "input_size": (3, 224, 224), "crop_pct": 0.875}),
        "at256": (small_net(2), {**imagenet, "input_size": (3, 256, 256), "crop_pct": 0.95}),
    }
    store = CacheStore(tmp_path / "cache")
    run = run_sat(models, data=f"imagefolder:{tmp_path / 'set'}", steps=2, n_boot=0, cache=store, out=tmp_path / "run")
    transfer = run.transfer
    shapes = [store.open("adv", key).shape("images") for key in transfer.adv_keys]
    assert shapes == [(9, 3, 224, 224), (9, 3, 256, 256)]
    # The clean logits are each model's on its own view.
    data = load_data(f"imagefolder:{tmp_path / 'set'}", store=store, views="own")
    for n, spec in enumerate(transfer.specs):
        model = create_model(spec, cache=store)
        seen = data.seen_by(model.preprocess.view, store)
        with torch.inference_mode():
            logits = model(seen.images.rows(np.arange(len(seen))).float() / 255)
        assert np.allclose(transfer.clean_logits[n], logits.numpy(), atol=1e-5)
    table = pd.read_csv(tmp_path / "run" / "models.csv", keep_default_na=False)
    assert table.view.tolist() == ["224/256 center bicubic", "256/269 center bicubic"]
    assert run.config["settings"]["views"] == "own" and set(run.config["weights"]) == {"at224", "at256"}
    # Two views decoded, one per model; the shared 224-px storage, which no model read, never was.
    assert len(list((store.root / "data").rglob("*.bin"))) == 2, sorted((store.root / "data").rglob("*"))
