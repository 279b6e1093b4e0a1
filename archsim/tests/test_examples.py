"""The documentation's worked examples run as scripts, as a reader would run them."""

import runpy
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.mark.slow
def test_the_notebook_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARCHSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EXAMPLE_OUT", str(tmp_path / "run"))
    example = runpy.run_path(str(EXAMPLES / "notebook.py"), run_name="__main__")
    assert "saved to" in capsys.readouterr().out and (tmp_path / "run" / "config.json").is_file()
    # Each model's clean accuracy as a plain loop over the held-out images finds it, with the stated normalisation.
    x, y = example["images"][example["held_out"]], example["labels"][example["held_out"]]
    accuracy = example["run"].models.set_index("model").clean_accuracy
    for name in ("resnet10t", "vit"):
        with torch.no_grad():
            right = (example[name.removesuffix("10t")](((x - 0.5) / 0.5)).argmax(1) == y).float().mean().item()
        assert accuracy[name] == pytest.approx(100 * right, abs=1e-4), name  # one image is 1.25 %
    assert accuracy.min() > 50
