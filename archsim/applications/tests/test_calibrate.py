"""archsim calibrate recovers the radius a matrix was computed at, and refuses what it cannot compare."""

import numpy as np
import pandas as pd
import pytest

from archsim import run_sat
from archsim.applications.calibrate import agreement, calibrate_radius
from archsim.errors import ParameterError
from archsim.tests.cli_runner import run_cli

THREE = ["zoo:resnet-s0", "zoo:resnet-s1", "zoo:convnext"]  # 16, 16 and 32 px; trained for other tests too
QUICK = dict(n_images=40, steps=10, rel_step=0.2, n_boot=0)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("calibrate") / "run"
    run_sat(THREE, **QUICK, cache=cache_dir, out=out)  # at the digits' default radius, 25/255
    return out


def test_the_radius_a_matrix_was_made_at_is_recovered_from_the_grid(base_run, cache_dir, tmp_path, capsys):
    published = tmp_path / "published.csv"
    run_sat(THREE, **QUICK, eps=12 / 255, cache=cache_dir).sat.to_csv(published)
    code, stdout, err = run_cli(
        capsys,
        "calibrate",
        "--run",
        str(base_run),
        "--published",
        str(published),
        "--radii",
        "6/255 12/255 24/255",
        "--cache",
        str(cache_dir),
    )
    assert code == 0, err
    assert "best radius: 12/255" in stdout
    table = pd.read_csv(base_run / "calibration" / "calibration.csv")
    assert table.levels.tolist() == [6, 12, 24] and table.best.tolist() == [False, True, False]
    exact = table.set_index("levels").loc[12]
    assert exact.mean_abs_diff == 0 and exact.spearman == pytest.approx(1) and exact.pairs == 6
    # A larger radius fools more: the white-box diagonal and the distance from the 12/255 matrix grow with it.
    assert table.white_box_mean.is_monotonic_increasing
    assert table.set_index("levels").loc[24].mean_abs_diff > 0 and table.set_index("levels").loc[6].mean_abs_diff > 0
    assert (base_run / "calibration" / "calibration.png").stat().st_size > 1000
    assert "Radius calibrated against a published matrix" in (base_run / "report.html").read_text()


def test_agreement_by_hand():
    names = ["a", "b", "c"]
    ours = pd.DataFrame([[4.0, 1.0, 2.0], [1.0, 4.2, 3.0], [2.0, 3.0, 4.4]], index=names, columns=names)
    theirs = pd.DataFrame([[4.6, 1.5, np.nan], [1.5, 4.6, 2.0], [np.nan, 2.0, 4.6]], index=names, columns=names)
    found = agreement(ours, theirs, names)
    # Pairs (a,b), (b,a), (b,c), (c,b): |1-1.5| twice, |3-2| twice.
    assert found["pairs"] == 4 and found["mean_abs_diff"] == pytest.approx(0.75)
    assert found["white_box_mean"] == pytest.approx(4.2) and found["published_white_box_mean"] == pytest.approx(4.6)


def test_a_published_matrix_naming_too_few_of_the_run_models_is_refused(base_run, tmp_path):
    names = ["resnet-s0", "someone-else", "another"]
    pd.DataFrame(np.full((3, 3), 2.0), index=names, columns=names).to_csv(tmp_path / "p.csv")
    with pytest.raises(ParameterError, match="names 1 of the run's models"):
        calibrate_radius(base_run, tmp_path / "p.csv", [4 / 255, 8 / 255])
    with pytest.raises(ParameterError, match="at least two different radii"):
        calibrate_radius(base_run, tmp_path / "p.csv", [4 / 255, 4.2 / 255])


def test_a_run_rounds_its_radius_in_one_warning(cache_dir):
    with pytest.warns(UserWarning, match=r"^eps 0\.03 is 7\.65 levels.*rounded to the nearest, 8/255") as caught:
        run = run_sat(THREE[:2], n_images=20, steps=1, eps=0.03, n_boot=0, cache=cache_dir)
    assert run.config["settings"]["attack"]["eps"] == 8 / 255
    assert len([w for w in caught if "levels of 1/255" in str(w.message)]) == 1
