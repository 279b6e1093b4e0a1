"""Run settings: typed, and written as run folders of every archsim version hold them, so that each still resumes."""

import json

import pytest

from archsim.errors import ParameterError
from archsim.runs import RunFolder, RunSettings

BEFORE_LATER_OPTIONS = {  # a folder made before precision, keep_going, attack_seeds and views existed
    "models": ["zoo:resnet-s0", "zoo:vit"],
    "data": "digits",
    "n_images": 60,
    "attack": {"name": "pgd", "eps": 0.09803921568627451, "steps": 25, "rel_step": 0.2, "random_start": True},
    "seed": 0,
    "eps_s": 1.0,
    "n_boot": 200,
}


def test_settings_of_an_old_folder_read_back_as_written_and_typed():
    settings = RunSettings.from_dict(BEFORE_LATER_OPTIONS)
    assert settings.models == ("zoo:resnet-s0", "zoo:vit") and settings.eps == BEFORE_LATER_OPTIONS["attack"]["eps"]
    assert (settings.precision, settings.keep_going, settings.attack_seeds, settings.views) == (
        "fp32",
        False,
        1,
        "shared",
    )
    assert settings.attack_spec == "pgd,steps=25,rel_step=0.2,random_start=true"
    assert settings.to_dict() == BEFORE_LATER_OPTIONS  # nothing added: the folder's rerun matches it


def test_later_settings_are_recorded_only_where_they_differ():
    later = {**BEFORE_LATER_OPTIONS, "precision": "bf16", "keep_going": True, "attack_seeds": 3, "views": "own"}
    assert RunSettings.from_dict(later).to_dict() == later
    assert json.loads(json.dumps(RunSettings.from_dict(later).to_dict())) == later
    with pytest.raises(TypeError):
        RunSettings.from_dict({**BEFORE_LATER_OPTIONS, "unknown": 1})


def test_a_folder_claimed_with_other_settings_is_refused(tmp_path):
    folder = RunFolder(tmp_path / "run")
    settings = RunSettings.from_dict(BEFORE_LATER_OPTIONS)
    with folder.claim(settings):
        (tmp_path / "run" / "sat.csv").write_text("x\n")  # a result, so the settings.json now binds the folder
    with folder.claim(settings):
        pass
    other = RunSettings.from_dict({**BEFORE_LATER_OPTIONS, "views": "own", "seed": 1})
    with pytest.raises(ParameterError, match=r"different configuration \(differs in: seed, views\)"):
        with folder.claim(other):
            pass


def test_a_config_whose_settings_are_not_a_runs_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"settings": {"models": []}}))
    with pytest.raises(
        ParameterError, match=r"^run_dir .*run: the settings in its config.json are not a run's \(KeyError"
    ):
        _ = RunFolder(tmp_path / "run").settings
