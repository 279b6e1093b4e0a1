import math
import warnings

import numpy as np
import pytest

from archsim.measures import sat_tables, sat_value


def test_sat_value_hand_computed():
    # 3 of 4 decisions fooled over |X_AB| = 2: 100 * 3 / (2 * 2) = 75 %.
    assert sat_value(3, 2) == pytest.approx(math.log(75))
    # One-sided: 1 fooled of 2 -> 50 %.
    assert sat_value(1, 2, sides=1) == pytest.approx(math.log(50))


def test_sat_value_floor_and_empty():
    assert sat_value(0, 10) == 0.0 and sat_value(1, 200) == 0.0  # the default floor is 1 %: 0.25 % -> ln(1)
    assert sat_value(0, 10, eps_s=1.0) == pytest.approx(0.0)
    assert sat_value(0, 10, eps_s=0.01) == pytest.approx(math.log(0.01))
    assert np.isnan(sat_value(0, 0))


def _two_models():
    labels_correct = np.array(
        [
            [True, True, True, False, True],
            [True, True, False, True, True],
        ]
    )
    adv_wrong = np.zeros((2, 2, 5), dtype=bool)
    adv_wrong[0, 0] = True  # white-box: every image fooled
    adv_wrong[1, 1] = True
    adv_wrong[0, 1] = [True, False, True, True, False]  # model 1 fooled by model 0's set
    adv_wrong[1, 0] = [False, False, False, False, True]  # model 0 fooled by model 1's set
    return labels_correct, adv_wrong


def test_sat_tables_by_hand():
    correct, wrong = _two_models()
    tables = sat_tables(["a", "b"], correct, wrong, n_boot=0)
    # X_ab = images 0, 1, 4. b fooled by a: image 0 -> 1; a fooled by b: image 4 -> 1. (1 + 1) / (2 * 3).
    assert tables.sat.loc["a", "b"] == pytest.approx(math.log(100 * 2 / 6))
    assert tables.sat.loc["b", "a"] == tables.sat.loc["a", "b"]
    assert tables.sat.loc["a", "a"] == pytest.approx(math.log(100))
    row = tables.pairs.set_index(["source", "target"]).loc[("a", "b")]
    assert row.n_both_correct == 3
    assert row.fool_rate_source_to_target == pytest.approx(100 / 3)
    assert row.one_sided_sat == pytest.approx(math.log(100 / 3))
    # The other direction, read from either row: a fooled by b's set on image 4 only, 1 of 3; the diagonal 100 %.
    back = tables.pairs.set_index(["source", "target"]).loc[("b", "a")]
    assert back.fool_rate_source_to_target == row.fool_rate_target_to_source == pytest.approx(100 / 3)
    assert tables.one_sided.loc["b", "a"] == pytest.approx(math.log(100 / 3))
    assert tables.pairs.set_index(["source", "target"]).loc[("a", "a")].fool_rate_source_to_target == 100
    # Fooled 0 of 3 one way: a rate of 0 and the one-sided SAT at the floor, ln(1).
    wrong[1, 0] = False
    none = sat_tables(["a", "b"], correct, wrong, n_boot=0).pairs.set_index(["source", "target"]).loc[("b", "a")]
    assert none.fool_rate_source_to_target == 0 and none.one_sided_sat == 0.0
    with pytest.raises(ValueError, match=r"^adv_wrong must be \[2, 2, 5\], got \(2, 2, 4\)"):
        sat_tables(["a", "b"], correct, wrong[:, :, :4])


def test_empty_intersection_gives_nan():
    correct = np.array([[True, False], [False, True]])
    wrong = np.ones((2, 2, 2), dtype=bool)
    with pytest.warns(UserWarning, match="^some pairs share no clean-correct image; their SAT is NaN$"):
        tables = sat_tables(["a", "b"], correct, wrong, n_boot=10)
    assert np.isnan(tables.sat.loc["a", "b"])
    assert np.isnan(tables.pairs.set_index(["source", "target"]).loc[("a", "b")].fool_rate_source_to_target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every pair shares an image: no word
        single = sat_tables(["a", "b"], np.ones((2, 2), dtype=bool), wrong, n_boot=1).pairs
    assert single.sat_low.notna().all() and single.one_sided_high.notna().all()  # one replicate is an interval
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # One image in common is a pair all the same: its SAT and rates are defined.
        one = sat_tables(["a", "b"], np.array([[True, True], [False, True]]), wrong, n_boot=0)
    assert one.sat.loc["a", "b"] == pytest.approx(math.log(100)) and sat_value(1, 1, sides=1) == pytest.approx(
        math.log(100)
    )
    assert one.pairs.set_index(["source", "target"]).loc[("a", "b")].fool_rate_source_to_target == 100


def test_the_default_bootstrap_is_1000_replicates_seeded_0():
    rng = np.random.default_rng(7)
    correct, wrong = rng.random((2, 30)) < 0.8, rng.random((2, 2, 30)) < 0.5
    default = sat_tables(["a", "b"], correct, wrong).pairs
    assert default.equals(sat_tables(["a", "b"], correct, wrong, n_boot=1000, seed=0).pairs)
    assert not default.equals(sat_tables(["a", "b"], correct, wrong, n_boot=1000, seed=1).pairs)


def test_bootstrap_interval_brackets_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    correct = rng.random((4, 200)) < 0.9
    wrong = rng.random((4, 4, 200)) < 0.3
    first = sat_tables(list("abcd"), correct, wrong, n_boot=300, seed=1).pairs
    again = sat_tables(list("abcd"), correct, wrong, n_boot=300, seed=1).pairs
    assert first.equals(again)
    assert (first.sat_low <= first.sat + 1e-12).all() and (first.sat <= first.sat_high + 1e-12).all()
    assert (first.sat_high > first.sat_low).all()


def test_bootstrap_equals_resampling_the_images_and_does_not_depend_on_the_chunks(monkeypatch):
    """Each replicate's weights are how often each image is drawn: SAT of the drawn images, pair by pair."""
    from archsim.measures import sat

    rng = np.random.default_rng(5)
    correct = rng.random((3, 40)) < 0.8
    wrong = rng.random((3, 3, 40)) < 0.4
    whole = sat_tables(list("abc"), correct, wrong, n_boot=50, seed=2).pairs
    monkeypatch.setattr(sat, "BOOTSTRAP_CHUNK_BYTES", 8 * 9 * 7)  # 7 images at a time
    assert sat_tables(list("abc"), correct, wrong, n_boot=50, seed=2).pairs.equals(whole)

    draws = np.random.default_rng(2).multinomial(40, np.full(40, 1 / 40), size=50)
    replicates, one_sided = [], []
    for counts in draws:
        drawn = np.repeat(np.arange(40), counts)  # the resampled images, with repeats
        # Counted by hand on the drawn images, as the definition reads.
        both = correct[:, None, drawn] & correct[None, :, drawn]
        fooled = (both & wrong[:, :, drawn]).sum(-1)
        replicates.append(np.log(np.maximum(1, 100 * (fooled + fooled.T) / (2 * both.sum(-1)))))
        one_sided.append(np.log(np.maximum(1, 100 * fooled / both.sum(-1))))
    low, high = np.nanpercentile(np.stack(replicates), [2.5, 97.5], axis=0)
    one_low, one_high = np.nanpercentile(np.stack(one_sided), [2.5, 97.5], axis=0)
    table = whole.set_index(["source", "target"])
    for i, s in enumerate("abc"):
        for j, t in enumerate("abc"):
            row = table.loc[(s, t)]
            assert np.isclose(row.sat_low, low[i, j]) and np.isclose(row.sat_high, high[i, j])
            assert np.isclose(row.one_sided_low, one_low[i, j]) and np.isclose(row.one_sided_high, one_high[i, j])
