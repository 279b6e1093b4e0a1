"""The documentation's worked examples run as scripts, as a reader would run them."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.mark.slow
def test_the_notebook_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARCHSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EXAMPLE_OUT", str(tmp_path / "run"))
    runpy.run_path(str(EXAMPLES / "notebook.py"), run_name="__main__")
    assert "saved to" in capsys.readouterr().out and (tmp_path / "run" / "config.json").is_file()
