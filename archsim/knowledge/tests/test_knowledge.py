"""alpha_1 and alpha_2 on cases with known answers, and the synthetic experiment on the published data."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ortho_group

from archsim.knowledge import alpha_1, alpha_2
from archsim.knowledge.synthetic import result_name, run_configuration
from archsim.tests.cli_runner import run_cli

SYNTHETIC = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "liang_synthetic"
needs_data = pytest.mark.needs("liang_synthetic")  # skips where missing, fails under CI=true (conftest)


def deviations(items=400, dim=5, seed=0):
    return np.random.default_rng(seed).normal(size=(items, dim))


def test_a_target_equal_to_the_source():
    d = deviations()
    assert np.allclose(alpha_1(d, d), 1.0)
    # mean of u u^T over unit vectors: its Frobenius norm, computed directly.
    u = d / np.linalg.norm(d, axis=1, keepdims=True)
    assert alpha_2(d, d) == pytest.approx(np.linalg.norm(u.T @ u / len(u)))
    # Directions uniform on the sphere in 5 dimensions: E[u u^T] = I / 5, whose Frobenius norm is 1 / sqrt(5).
    isotropic = deviations(20000)
    assert alpha_2(isotropic, isotropic) == pytest.approx(1 / np.sqrt(5), abs=0.01)
    same_direction = np.tile([[1.0, 2.0, 0.0]], (50, 1)) * np.arange(1, 51)[:, None]
    assert alpha_2(same_direction, same_direction) == pytest.approx(1.0)


def test_an_affine_target_of_other_output_size():
    d_s = deviations(dim=5)
    rotation = ortho_group.rvs(5, random_state=1)
    scaled = 3.0 * d_s @ rotation.T
    # A rotated and scaled copy: alpha_1 is the scale, alpha_2 the same as for an identical target.
    assert np.allclose(alpha_1(scaled, d_s), 3.0)
    assert alpha_2(d_s, scaled) == pytest.approx(alpha_2(d_s, d_s))
    # Into 3 outputs through a fixed map: every item's pair of directions is linked by the map, so
    # alpha_2 equals the norm of the mean outer product of the directions, computed by hand.
    mapping = np.random.default_rng(2).normal(size=(3, 5))
    d_t = d_s @ mapping.T
    u = d_s / np.linalg.norm(d_s, axis=1, keepdims=True)
    v = d_t / np.linalg.norm(d_t, axis=1, keepdims=True)
    assert alpha_2(d_s, d_t) == pytest.approx(np.linalg.norm(u.T @ v / len(u)))
    assert alpha_2(d_s, d_t) > 0.3


def test_an_independent_target():
    d_s, d_t = deviations(20000, 5, 0), deviations(20000, 3, 1)
    assert alpha_2(d_s, d_t) < 0.02  # ~ 1/sqrt(items)
    ratio = alpha_1(d_t, deviations(20000, 3, 2))
    assert np.nanmean(ratio) == pytest.approx(np.mean(ratio), rel=1e-12) and 0.8 < np.median(ratio) < 1.25


def test_zero_deviations_are_guarded():
    d = deviations(10, 4)
    zero = np.zeros_like(d)
    assert np.isnan(alpha_1(d, zero)).all()
    assert alpha_2(d, zero) == 0.0
    weights = np.r_[np.full(5, np.nan), np.ones(5)]
    assert alpha_2(d, d, weights) == pytest.approx(alpha_2(d[5:], d[5:]))


@needs_data
def test_synthetic_same_width_level_0():
    table = run_configuration(SYNTHETIC, 100, 0)
    assert list(table.scale) == pytest.approx([0.1 * i for i in range(10)])
    first = table.iloc[0]
    # Step 0: the source is the target itself.
    assert first.alpha_S_T == pytest.approx(1.0) and first.alpha_T_S == pytest.approx(1.0)
    assert first.gradient_loss < 1e-9 and first.loss_f_S == pytest.approx(first.loss_f_T, rel=1e-3)
    # As the source drifts, the attack transfers less and its knowledge serves the task worse.
    assert table.alpha_S_T.is_monotonic_decreasing and table.alpha_gamma_combined_S_T.is_monotonic_decreasing
    assert table.loss_f_S.is_monotonic_increasing and table.gradient_loss.is_monotonic_increasing


@needs_data
def test_liang_synthetic_command_and_bad_input(tmp_path, capsys):
    code, _, err = run_cli(capsys, "liang-synthetic", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2 and "is missing" in err and err.count("\n") == 1
    assert result_name(50, 1) == "result_scale-crossmodel-source_m-50-rbf-n-50-d-10-m-100-N-5000-attack_level-1.csv"
    assert result_name(100, 0) == "result_scale-rbf-n-50-d-10-m-100-N-5000-attack_level-0.csv"


@needs_data
@pytest.mark.slow
def test_liang_synthetic_all_six(tmp_path, capsys):
    code, stdout, err = run_cli(capsys, "liang-synthetic", "--data-dir", str(SYNTHETIC), "--out", str(tmp_path))
    assert code == 0, err
    files = sorted(p.name for p in tmp_path.glob("result_scale-*.csv"))
    assert len(files) == 6 and (tmp_path / "liang_synthetic.png").is_file()
    for name in files:
        table = pd.read_csv(tmp_path / name)
        assert list(table.columns)[:3] == ["scale", "alpha_S_T", "alpha_T_S"] and len(table) == 10
        if name.endswith("level-0.csv"):  # the expected trend at level 0 (docs/method.md#knowledge)
            assert (
                table.alpha_S_T.iloc[-1] < table.alpha_S_T.iloc[0] and table.loss_f_S.iloc[-1] > table.loss_f_S.iloc[0]
            )


@pytest.mark.parametrize("block_rows", [4, 30])  # the kernel in blocks that do not divide the 30 images, and whole
def test_bootstrap_of_alpha_2_matches_explicit_resamples(monkeypatch, block_rows):
    from archsim.knowledge import on_run
    from archsim.knowledge.alphas import unit_rows
    from archsim.knowledge.on_run import _bootstrap_alpha_2

    monkeypatch.setattr(on_run, "_KERNEL_BLOCK_BYTES", 8 * 30 * block_rows)

    d_s, d_t = deviations(30, 4, 0), deviations(30, 3, 1)
    d_t[:, 0] += d_s[:, 0]
    weights = np.random.default_rng(3).uniform(0.5, 2, 30)
    values = _bootstrap_alpha_2(unit_rows(d_s), unit_rows(d_t), weights, 5, np.random.default_rng(7))
    counts = np.random.default_rng(7).multinomial(30, np.full(30, 1 / 30), size=5)
    for value, c in zip(values, counts, strict=True):
        idx = np.repeat(np.arange(30), c)
        assert value == pytest.approx(alpha_2(d_s[idx], d_t[idx], weights[idx]))


def test_alphas_on_a_run(tmp_path, cache_dir, capsys):
    from archsim import run_sat

    run_sat(
        ["zoo:resnet-s0", "zoo:convnext"],
        n_images=60,
        steps=25,
        rel_step=0.2,
        n_boot=200,
        cache=cache_dir,
        out=tmp_path / "run",
    )
    code, stdout, err = run_cli(
        capsys, "alphas", "--run", str(tmp_path / "run"), "--n-boot", "50", "--cache", str(cache_dir)
    )
    assert code == 0, err
    a1 = pd.read_csv(tmp_path / "run" / "alphas" / "alpha_1.csv", index_col=0)
    a2 = pd.read_csv(tmp_path / "run" / "alphas" / "alpha_2.csv", index_col=0)
    combined = pd.read_csv(tmp_path / "run" / "alphas" / "alpha_combined.csv", index_col=0)
    assert list(a1.index) == ["resnet-s0", "convnext"]
    assert np.allclose(np.diag(a1), 1.0) and np.allclose(np.diag(combined), np.diag(a2))  # a model against itself
    assert ((a2.to_numpy() > 0) & (a2.to_numpy() <= 1 + 1e-9)).all() and (a1.to_numpy() > 0).all()
    pairs = pd.read_csv(tmp_path / "run" / "alphas" / "alphas_pairs.csv")
    off = pairs[pairs.source != pairs.target]
    assert (
        (off.alpha_1_low <= off.alpha_1).all() and (off.alpha_1 <= off.alpha_1_high).all() and (off.images > 30).all()
    )


def test_an_image_without_alpha_1_is_left_out_of_estimate_and_bootstrap_alike():
    """|Delta_T->T| = 0 on one image: alpha_1 is undefined there. The estimate, every resample and the
    combined score leave that image out (it once counted as 0 in the resamples' and the combined
    score's denominators, pulling them below the estimate)."""
    from archsim.knowledge.alphas import alpha_2
    from archsim.knowledge.on_run import pair_alphas

    rng = np.random.default_rng(0)
    d_ss, d_st = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    d_tt = d_st / 2.0  # alpha_1 = 2 on every image...
    d_tt[3] = 0.0  # ...but this one, where it is undefined
    row = pair_alphas(d_ss, d_st, d_tt, n_boot=200, rng=np.random.default_rng(1))
    assert row["alpha_1"] == pytest.approx(2.0)
    assert row["alpha_1_low"] == pytest.approx(2.0) and row["alpha_1_high"] == pytest.approx(2.0)
    kept = np.arange(6) != 3
    assert row["alpha_combined"] == pytest.approx(alpha_2(d_ss[kept], d_st[kept], np.full(5, 2.0)))
    assert row["alpha_combined_low"] <= row["alpha_combined"] <= row["alpha_combined_high"]
    assert row["alpha_2"] == pytest.approx(alpha_2(d_ss, d_st))  # alpha_2 needs no alpha_1: every image
    every = pair_alphas(d_ss, d_st, d_st / 2.0, n_boot=0, rng=rng)
    assert every["alpha_1"] == pytest.approx(2.0) and "alpha_1_low" not in every


def test_alpha_2_of_one_image_is_one():
    """One image: the mean outer product is the outer product of two unit vectors, whose Frobenius norm is 1; with
    every other image's weight undefined the combined score is that image's alpha_1 (the weight)."""
    d_s, d_t = deviations(3, 4, 0), deviations(3, 2, 1)
    assert alpha_2(d_s[:1], d_t[:1]) == pytest.approx(1.0)
    assert alpha_2(d_s, d_t, np.array([np.nan, 2.5, np.nan])) == pytest.approx(2.5)


def test_alpha_1_and_unit_rows_over_stacked_pairs():
    """Deviations of several pairs stacked [pairs, items, d]: each pair's values, the norm over the output axis."""
    from archsim.knowledge.alphas import unit_rows

    d_st, d_tt = deviations(12, 3, 0).reshape(2, 6, 3), deviations(12, 3, 1).reshape(2, 6, 3)
    np.testing.assert_allclose(alpha_1(d_st, d_tt), [alpha_1(d_st[0], d_tt[0]), alpha_1(d_st[1], d_tt[1])])
    np.testing.assert_allclose(np.linalg.norm(unit_rows(d_st), axis=-1), 1.0)


@needs_data
@pytest.mark.parametrize("level", [0, 1])
def test_synthetic_metrics_and_refit_equal_autograd_svd_and_least_squares(level):
    """One drifted source against the published target on 200 points, from independent parts: input Jacobians by
    autograd, attack directions from numpy's SVD (the right singular vector at rank ``level``), the metrics' formulas
    in numpy, the best linear map between the Jacobians and the last-layer refit by least squares (numpy, and
    scikit-learn's LinearRegression)."""
    from sklearn.linear_model import LinearRegression

    from archsim.knowledge.synthetic import DATA_FILE, Network, refit_loss, transfer_metrics, weights_file

    data = np.load(SYNTHETIC / DATA_FILE)
    x, y = (
        torch.as_tensor(data["X"][:, :200], dtype=torch.float64),
        torch.as_tensor(data["Y"][:, :200], dtype=torch.float64),
    )
    load = lambda width: torch.load(SYNTHETIC / weights_file(width), weights_only=True)  # noqa: E731
    target = Network(*(load(100)[k].double() for k in ("W1", "b1", "W2", "b2")))
    generator = torch.Generator().manual_seed(3)
    drift = lambda w: w.double() + 0.3 * (torch.rand(w.shape, generator=generator, dtype=torch.float64) - 0.5)  # noqa: E731
    source = Network(*(drift(load(50)[k]) for k in ("W1", "b1", "W2", "b2")))
    metrics = transfer_metrics(source.jacobians(x), target.jacobians(x), level)

    def jacobians(net):
        forward = lambda point: net.W2 @ torch.sigmoid(net.W1 @ point[:, None] + net.b1)[:, 0] + net.b2[:, 0]  # noqa: E731
        return np.stack([torch.autograd.functional.jacobian(forward, x[:, i]).numpy() for i in range(x.shape[1])])

    j_s, j_t = jacobians(source), jacobians(target)
    svd_s, svd_t = np.linalg.svd(j_s), np.linalg.svd(j_t)  # U, S, Vt per point
    v_s, v_t = svd_s[2][:, level], svd_t[2][:, level]
    d_ss, d_st = np.einsum("Ndn,Nn->Nd", j_s, v_s), np.einsum("Ndn,Nn->Nd", j_t, v_s)
    d_tt, d_ts = np.einsum("Ndn,Nn->Nd", j_t, v_t), np.einsum("Ndn,Nn->Nd", j_s, v_t)
    a_st = np.linalg.norm(d_st, axis=1) / svd_t[1][:, 0]
    a_ts = np.linalg.norm(d_ts, axis=1) / svd_s[1][:, 0]
    unit = lambda d: d / np.linalg.norm(d, axis=1, keepdims=True)  # noqa: E731
    gamma = lambda a, b, w: np.linalg.norm(np.einsum("i,ia,ib->ab", w, unit(a), unit(b)) / len(a))  # noqa: E731
    ones = np.ones(len(a_st))
    stacked_s, stacked_t = np.concatenate(j_s, axis=1), np.concatenate(j_t, axis=1)  # [d, N n]
    mapping = np.linalg.lstsq(stacked_s.T, stacked_t.T, rcond=None)[0].T
    residual = j_t - np.einsum("ab,Nbn->Nan", mapping, j_s)
    expected = {
        "alpha_S_T": a_st.mean(),
        "alpha_T_S": a_ts.mean(),
        "gamma_S_T": gamma(d_ss, d_st, ones),
        "gamma_T_S": gamma(d_tt, d_ts, ones),
        "alpha_gamma_combined_S_T": gamma(d_ss, d_st, a_st),
        "alpha_gamma_combined_T_S": gamma(d_tt, d_ts, a_ts),
        "gradient_loss": np.sqrt((residual**2).sum((1, 2)).mean()),
    }
    assert metrics == pytest.approx(expected, rel=1e-6)
    assert 0.05 < metrics["alpha_S_T"] < 0.95  # a drifted source: neither the target itself nor unrelated

    hidden = source.hidden(x).numpy().T
    fitted = LinearRegression().fit(hidden, y.numpy().T).predict(hidden)
    assert refit_loss(source, x, y) == pytest.approx(np.sqrt(((y.numpy().T - fitted) ** 2).sum(1).mean()), rel=1e-6)


def test_alpha_matrices_refuses_a_bad_n_boot_before_any_work(tmp_path):
    from archsim.errors import ParameterError
    from archsim.knowledge.on_run import alpha_matrices

    for bad in (-1, 2.5, True):
        with pytest.raises(ParameterError) as error:
            alpha_matrices(tmp_path / "no-run", n_boot=bad)
        assert error.value.parameter == "n_boot" and str(error.value).startswith("n_boot must be a whole number of 0")
