"""The benchmark scripts are not run by the suite (they time things), but each must still load
and build its command line: a helper renamed in one script once broke two others unnoticed."""

import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "common.py")


def test_every_script_is_checked():
    assert len(SCRIPTS) >= 8 and (BENCHMARKS / "common.py").is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_script_imports_and_answers_help(script, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    # The scripts import one another as top-level modules (common, attack): load them fresh each time.
    for name in [p.stem for p in BENCHMARKS.glob("*.py")]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:some pairs share no clean-correct image")  # random weights classify nothing right
def test_study_runs_reduced_on_the_cpu(monkeypatch, capsys, tmp_path):
    """benchmarks/study.py end to end on two of the paper's architectures, two images, one step: the extrapolated
    cost of the whole study is printed and written, and the naive way costs more than archsim's."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in [p.stem for p in BENCHMARKS.glob("*.py")]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "study.py",
            "--limit",
            "2",
            "--n-images",
            "2",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
    )
    runpy.run_path(str(BENCHMARKS / "study.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "archsim, 69 models, one device" in out and "naive: torchattacks PGD per pair" in out
    totals = pd.read_csv(tmp_path / "study_totals.csv", index_col=0)["hours"]
    assert totals.iloc[0] > 0 and totals["naive: torchattacks PGD per pair, one device"] > 10 * totals.iloc[0]
    assert len(pd.read_csv(tmp_path / "study_models.csv")) == 2
