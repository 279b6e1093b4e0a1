import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import plotly.offline
import pytest

from archsim.analysis.cards import CARD_COLUMNS
from archsim.analysis.run import analyze_matrix
from archsim.report import render_report
from archsim.report.analyze import write_analysis

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a machine without a display or network; console messages go to stderr.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def small_analysis():
    names = [f"model_{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    values = np.full((8, 8), 1.2) + rng.uniform(0, 0.3, (8, 8))
    values[:4, :4] += 2.0
    values = (values + values.T) / 2
    np.fill_diagonal(values, 4.6)
    sat = pd.DataFrame(values, index=names, columns=names)
    cards = pd.DataFrame({c: ["A"] * 8 for c in CARD_COLUMNS}, index=names)
    cards["Base architecture"] = ["CNN"] * 4 + ["Transformer"] * 4
    cards.loc["model_7", "Stem layer"] = "<script>alert(1)</script>"  # must come out escaped
    models = pd.DataFrame(
        {
            "model": names,
            "clean_accuracy": 99.0,
            "white_box_success": 100.0,
            "family": "f",
            "regime": "standard",
            "seed": [0, 1, 2, 3, 0, 0, 0, 0],
            "architecture": ["a"] * 4 + list("bcde"),
            "spec": names,
        }
    )
    return analyze_matrix(sat, cards, models=models, seed=0, n_resamples=5)


def test_report_is_self_contained_and_complete():
    page = render_report(small_analysis())
    for section in (
        "SAT matrix and clusters",
        "Clusters and keywords",
        "Component importance",
        "Training strategy vs architecture",
        "Models and accuracy",
        "Settings",
    ):
        assert section in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    # Nothing fetched when opened: every image inline, no remote or relative resource. plotly.js is inline too; the
    # links inside its code (map attributions) are never followed on this page, which the browser test checks.
    assert page.count(plotly.offline.get_plotlyjs()) == 1
    own = page.replace(plotly.offline.get_plotlyjs(), "")
    assert "<script src" not in own and "@import" not in own and "url(http" not in own
    sources = re.findall(r'(?:src|href)="([^"#][^"]*)"', own)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert page.count("<img") == 5  # SAT, spectral distances, eigenvalues, importance, training


@pytest.mark.needs("chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    write_analysis(small_analysis(), tmp_path)
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Failed to load resource" in line]
    assert not console, console
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (2400, 1280)
    # The figures drew: many distinct colours (a blank or broken page has a handful).
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500


def test_report_shows_attack_and_measure_comparisons():
    analysis = small_analysis()
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x00" * 16
    correlations = pd.DataFrame(
        {"a": ["pgd"], "b": ["fgsm"], "pairs": [28], "pearson": [0.9], "spearman": [0.8], "spearman_p": [1e-9]}
    )
    white_box = pd.DataFrame({"pgd": [100.0], "fgsm": [80.0]}, index=pd.Index(["model_0"], name="model"))
    comparison = pd.DataFrame(
        {"measure": ["sat", "cka"], "pair": ["a ~ b"] * 2, "passes_per_item": [204, 2], "noise_to_signal": [0.4, 0.01]}
    )
    analysis.extras = {
        "attacks": {"tables": [correlations, white_box], "figure": png},
        "measures": {"tables": [comparison, correlations], "figure": png},
    }
    page = render_report(analysis)
    assert "Attacks compared" in page and "Other similarity measures" in page
    assert "1e-09" in page  # a p-value keeps its magnitude
    assert page.count("<img") == 7
