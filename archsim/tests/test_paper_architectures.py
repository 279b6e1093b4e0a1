"""The SAT paper's 68 timm architectures through ``archsim run`` on this machine (``make test-scale``).

Random weights, two synthetic 224-px images, PGD with one step: the point is that every architecture
loads, passes the preflight check, is attacked, evaluated and described without a failure, and that
the 68 x 68 outputs are written. Random-weight models with ImageNet's 1000 classes classify nothing
right, so almost every SAT cell is undefined and comes out as NaN, with a warning.

Stage 2 at the paper's sizes: a subset that covers every base architecture and input size of the
paper (224, 240 and 256 px) with 2-class heads on photos in two classes, so that about half the
images are clean-correct and pairs across resolutions are evaluated. The whole 68 so is
``benchmarks/paper_zoo.py`` (its time in BENCHMARKS.md).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archsim.tests.test_views import photos

PAPER_MODELS = Path(__file__).resolve().parents[2] / "zoos" / "sat-paper.txt"
SUBSET = {
    # One of each base architecture and input resolution of the paper's cards ("Model Feature_release.csv").
    "resnet50": "CNN, 224",
    "botnet26t_256": "CNN, 256",
    "pit_s_224": "Hybrid, 224",
    "gmlp_s16_224": "MLP-Mixer, 224",
    "mixnet_xl": "NAS (CNN), 224",
    "fbnetv3_g": "NAS (CNN), 240",
    "nf_regnet_b1": "NAS (CNN), 256",
    "swin_s3_tiny_224": "NAS (TFM), 224",
    "deit_small_patch16_224": "Transformer, 224",
    "crossvit_base_240": "Transformer, 240",
}
"""Smallest first where a group has several; gluon_xception65 (CNN, 299) is not in timm 1.0."""


def paper_specs(*options: str) -> list[str]:
    """The zoo file's lines, with ``options`` added to each."""
    lines = [line.strip() for line in PAPER_MODELS.read_text().splitlines() if line.startswith("timm:")]
    return [",".join([line, *options]) for line in lines]


def archsim_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "archsim"), *args]


def streamed(command: list[str]) -> tuple[int, str]:
    """Run ``command``, echoing its output as it comes (make test-scale runs pytest -s: a CI log shows where a run
    is); its exit code and output."""
    lines = []
    with subprocess.Popen(
        command,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            lines.append(line)
    return process.returncode, "".join(lines)


@pytest.mark.scale
def test_stage_two_at_the_papers_sizes_with_two_class_heads(tmp_path):
    specs = [spec for spec in paper_specs("pretrained=false", "num_classes=2") if spec.split(",")[1][5:] in SUBSET]
    assert len(specs) == len(SUBSET)
    (tmp_path / "models.txt").write_text("\n".join(specs) + "\n")
    photos(tmp_path / "set")
    started = time.perf_counter()
    code, output = streamed(
        archsim_command(
            "run",
            "--models",
            f"@{tmp_path / 'models.txt'}",
            "--data",
            f"imagefolder:{tmp_path / 'set'}",
            "--steps",
            "1",
            "--n-boot",
            "0",
            "--device",
            "cpu",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "run"),
        )
    )
    seconds = time.perf_counter() - started
    assert code == 0, output[-2000:]
    models = pd.read_csv(tmp_path / "run" / "models.csv")
    assert set(models.view.str.split("/").str[0].astype(int)) == {224, 240, 256}
    assert models.clean_accuracy.between(0, 100).all() and 20 <= models.clean_accuracy.mean() <= 80
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    evaluated = config["cost"]["stage2_images_evaluated"]
    sat = pd.read_csv(tmp_path / "run" / "sat.csv", index_col=0)
    sizes = models.set_index("model").view.str.split("/").str[0].astype(int)
    defined = [(a, b) for a in sat.index for b in sat.columns if a != b and np.isfinite(sat.loc[a, b])]
    assert evaluated > 0 and any(sizes[a] != sizes[b] for a, b in defined)  # pairs across resolutions
    print(
        f"\n{len(specs)} architectures (2-class heads, {len(models)} views of 9 photos): {seconds:.0f} s; "
        f"{len(defined)} of {len(sat) * (len(sat) - 1)} pairs defined, {evaluated} images evaluated in stage 2"
    )


@pytest.mark.scale
def test_every_architecture_of_the_paper_runs_end_to_end(tmp_path):
    specs = paper_specs("pretrained=false")
    assert len(specs) == 68
    (tmp_path / "models.txt").write_text("\n".join(specs) + "\n")
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "set.npz",
        images=rng.integers(0, 256, (2, 3, 224, 224), dtype=np.uint8),
        labels=rng.integers(0, 1000, 2),
        classes=np.array([f"class {i}" for i in range(1000)]),
    )
    command = archsim_command(
        "run",
        "--models",
        f"@{tmp_path / 'models.txt'}",
        "--data",
        f"npz:{tmp_path / 'set.npz'}",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--n-boot",
        "0",
        "--device",
        "cpu",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "run"),
    )
    code, output = streamed(command)
    assert code == 0, output[-2000:]
    sat = pd.read_csv(tmp_path / "run" / "sat.csv", index_col=0)
    names = [dict(part.split("=") for part in spec.split(",")[1:])["name"] for spec in specs]
    assert sat.shape == (68, 68) and list(sat.index) == names
    assert sat.isna().to_numpy().mean() > 0.9  # random weights: X_st is empty for almost every pair
    assert "their SAT is NaN" in output and "check models: 68/68" in output and "SAT matrix: 68 x 68 in" in output
    assert len(pd.read_csv(tmp_path / "run" / "cards.csv")) == 68
    timings = pd.read_csv(tmp_path / "run" / "timings.csv")
    assert len(timings) == 68 and (timings.attack_s > 0).all()
    timings["total_s"] = timings[["load_s", "clean_s", "attack_s", "evaluate_load_s", "evaluate_s"]].sum(axis=1)
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print("\nper model (seconds on this machine):")
        print(timings.sort_values("total_s", ascending=False).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
