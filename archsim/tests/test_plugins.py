"""Plugins: a real distribution, made in a temporary folder with its entry_points.txt and put on the path, adds an
attack, a measure and a model scheme that the CLI lists and runs; a plugin that fails to import is one warning."""

import json
import textwrap

import pandas as pd
import pytest

from archsim.plugins import PluginWarning, forget_plugins
from archsim.tests.cli_runner import run_cli

PLUGIN = '''
"""A plugin package as a third party would write it, against archsim's public API only."""
import numpy as np
import torch

from archsim.attacks import Attack
from archsim.attacks.base import project
from archsim.models import Preprocess, SimModel, create_model


class NoisyFGSM(Attack):
    """One FGSM step of size eps from a random point at sigma * eps around the image."""

    name = "noisy-fgsm"

    def __init__(self, eps: float, sigma: float = 0.5) -> None:
        super().__init__(eps)
        self.sigma = float(sigma)

    def config(self):
        return {**super().config(), "sigma": self.sigma}

    @property
    def uses_noise(self) -> bool:
        return True

    def perturb(self, model, x, y, noise):
        start = (x + self.sigma * self.eps * noise.draw()).clamp(0, 1)
        _, grad, _ = self.input_gradient(model, start, y)
        return project(start + self.eps * grad.sign(), x, self.eps)


class TopOneAgreement:
    """Share of images two models give the same label: the complement of disagreement, per image."""

    description = "share of images two models label alike (a similarity)"
    version = "1"
    passes_per_item = 2

    def items(self, models, specs, images, transfer):
        pred = transfer.clean_pred
        return (pred[:, None, :] == pred[None, :, :]).astype(float)


agreement = TopOneAgreement()


def renamed_zoo(spec, cache):
    """``renamed:NAME``: the embedded zoo's model NAME under the name plugin-NAME."""
    model = create_model(f"zoo:{spec.target}", cache=cache)
    model.name, model.spec = f"plugin-{spec.target}", spec.text
    return model
'''

ENTRY_POINTS = """
[archsim.attacks]
noisy-fgsm = archsim_demo_plugin:NoisyFGSM
broken-attack = archsim_demo_missing:Nothing

[archsim.measures]
top1-agreement = archsim_demo_plugin:agreement

[archsim.sources]
renamed = archsim_demo_plugin:renamed_zoo
"""


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "archsim_demo_plugin").mkdir(parents=True)
    (site / "archsim_demo_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "archsim_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: archsim-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    forget_plugins()
    yield site
    forget_plugins()


@pytest.mark.slow
def test_a_plugin_attack_measure_and_scheme_run_through_the_cli(plugin_on_path, tmp_path, cache_dir, capsys):
    code, stdout, _ = run_cli(capsys, "run", "--help")
    assert code == 0 and "Plugins add the attacks: noisy-fgsm, broken-attack" in " ".join(stdout.split())
    assert "Plugins add the schemes: renamed" in " ".join(stdout.split())

    out = tmp_path / "run"
    models = "zoo:resnet-s0 zoo:resnet-s1 renamed:convnext"
    common = ["--n-images", "60", "--n-boot", "50", "--cache", str(cache_dir)]
    with pytest.warns(PluginWarning, match="'broken-attack' .* failed to load \\(ModuleNotFoundError"):
        code, stdout, err = run_cli(
            capsys, "run", "--models", models, "--attack", "noisy-fgsm,sigma=0.25", *common, "--out", str(out)
        )
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["attack"] == {"name": "noisy-fgsm", "eps": 25 / 255, "sigma": 0.25}
    assert list(pd.read_csv(out / "sat.csv", index_col=0).index) == ["resnet-s0", "resnet-s1", "plugin-convnext"]
    # Deterministic and cached: the same command again computes nothing.
    code, stdout, err = run_cli(
        capsys, "run", "--models", models, "--attack", "noisy-fgsm,sigma=0.25", *common, "--out", str(tmp_path / "b")
    )
    assert code == 0 and (out / "sat.csv").read_text() == (tmp_path / "b" / "sat.csv").read_text(), err
    assert " 0 computed;" in stdout, stdout

    code, _, err = run_cli(capsys, "compare-attacks", "--run", str(out), "--attacks", "noisy-fgsm,sigma=0.25 fgsm")
    assert code == 0, err
    assert {"sat_noisy-fgsm_sigma_0.25.csv", "sat_fgsm.csv"} <= {p.name for p in (out / "attacks").iterdir()}

    code, _, err = run_cli(capsys, "measures", "--run", str(out), "--measures", "top1-agreement disagreement")
    assert code == 0, err
    agreement = pd.read_csv(out / "measures" / "measure_top1-agreement.csv", index_col=0).to_numpy()
    disagreement = pd.read_csv(out / "measures" / "measure_disagreement.csv", index_col=0).to_numpy()
    assert (abs(agreement + disagreement - 1) < 1e-6).all()


def test_a_broken_plugin_never_breaks_the_other_commands(plugin_on_path, capsys):
    code, stdout, err = run_cli(capsys, "zoo")
    assert code == 0, err
    with pytest.warns(PluginWarning, match="left out"):
        code, _, err = run_cli(capsys, "run", "--attack", "broken-attack", "--models", "zoo:vit zoo:mixer")
    assert code != 0 and "unknown attack 'broken-attack'" in err and len(err.strip().splitlines()) == 1
