"""The SAT paper's 68 timm architectures through ``archsim run`` on this machine (``make test-scale``).

Random weights, two synthetic 224-px images, PGD with one step: the point is that every architecture
loads, passes the preflight check, is attacked, evaluated and described without a failure, and that
the 68 x 68 outputs are written. Random-weight models classify nothing right, so almost every SAT
cell is undefined and comes out as NaN, with a warning.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PAPER_MODELS = Path(__file__).resolve().parents[2] / "zoos" / "sat-paper.txt"


@pytest.mark.scale
def test_every_architecture_of_the_paper_runs_end_to_end(tmp_path):
    specs = [
        line.strip() + ",pretrained=false" for line in PAPER_MODELS.read_text().splitlines() if line.startswith("timm:")
    ]
    assert len(specs) == 68
    (tmp_path / "models.txt").write_text("\n".join(specs) + "\n")
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "set.npz",
        images=rng.integers(0, 256, (2, 3, 224, 224), dtype=np.uint8),
        labels=rng.integers(0, 1000, 2),
        classes=np.array([f"class {i}" for i in range(1000)]),
    )
    archsim = Path(sys.executable).parent / "archsim"
    command = [
        str(archsim),
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
    ]
    # Streamed as it comes (make test-scale runs pytest -s): a CI log shows which model the run is at.
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
    output = "".join(lines)
    assert process.returncode == 0, output[-2000:]
    sat = pd.read_csv(tmp_path / "run" / "sat.csv", index_col=0)
    assert sat.shape == (68, 68) and list(sat.index) == [spec.split(":")[1].split(",")[0] for spec in specs]
    assert sat.isna().to_numpy().mean() > 0.9  # random weights: X_st is empty for almost every pair
    assert "their SAT is NaN" in output and "check models: 68/68" in output and "SAT matrix: 68 x 68 in" in output
    assert len(pd.read_csv(tmp_path / "run" / "cards.csv")) == 68
    timings = pd.read_csv(tmp_path / "run" / "timings.csv")
    assert len(timings) == 68 and (timings.attack_s > 0).all()
    timings["total_s"] = timings[["load_s", "clean_s", "attack_s", "evaluate_load_s", "evaluate_s"]].sum(axis=1)
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print("\nper model (seconds on this machine):")
        print(timings.sort_values("total_s", ascending=False).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
