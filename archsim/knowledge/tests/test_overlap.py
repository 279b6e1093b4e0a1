"""The data-overlap experiment: known answers, the guarded inputs, and one small end-to-end run."""

import numpy as np
import pandas as pd
import pytest
from torch import nn

from archsim.attacks import create_attack
from archsim.cache import CacheStore
from archsim.data import ImageSet, load_data
from archsim.errors import ArchsimError
from archsim.knowledge.overlap import (
    METRICS,
    TARGET_CLASSES,
    knowledge_correlations,
    pair_transferability,
    source_classes,
    transfer_accuracy,
)
from archsim.models import create_model
from archsim.models.wrapper import Preprocess, SimModel
from archsim.tests.cli_runner import run_cli


@pytest.fixture(scope="module")
def digits_model(cache_dir):
    return create_model("zoo:resnet-s0", cache=CacheStore(cache_dir))


def test_a_model_against_itself_has_alphas_of_one(digits_model):
    data = load_data("digits", n_images=60)
    row = pair_transferability(
        digits_model, digits_model, data.images, data.labels, create_attack("pgd", eps=0.1, steps=5), seed=0
    )
    # Same model, same seeded attack: every deviation equals the model's own, so alpha_1 is 1 per image, the
    # combined score (weights 1) is alpha_2, and alpha_2 is |E[u u^T]|_F of the unit deviations u, the same both ways.
    for direction in ("S_T", "T_S"):
        assert row[f"alpha_1_{direction}"] == pytest.approx(1.0)
        assert row[f"alpha_combined_{direction}"] == pytest.approx(row[f"alpha_2_{direction}"])
    assert row["alpha_2_S_T"] == pytest.approx(row["alpha_2_T_S"])
    assert 0 < row["alpha_2_S_T"] <= 1
    assert row["test_images"] >= 55


def test_source_classes_share_the_stated_part_of_the_target_task():
    for overlap in (0, 25, 50, 75, 100):
        classes = source_classes(overlap)
        assert len(classes) == 4 and len(set(classes) & set(TARGET_CLASSES)) == overlap // 25
    with pytest.raises(ArchsimError, match="overlap 30 % is not one of"):
        source_classes(30)


def test_incompatible_input_spaces_and_too_few_samples_are_one_line_errors(digits_model):
    data = load_data("digits", n_images=60)
    two_channel = SimModel(
        nn.Sequential(nn.Flatten(), nn.Linear(2 * 32 * 32, 10)),
        Preprocess((2, 32, 32), (0.5, 0.5), (0.5, 0.5)),
        "two",
        "test",
    )
    with pytest.raises(
        ArchsimError, match="incompatible input spaces: two takes 2-channel images, the data has 1"
    ) as error:
        pair_transferability(
            digits_model, two_channel, data.images, data.labels, create_attack("pgd", eps=0.1, steps=2)
        )
    assert "\n" not in str(error.value)
    labels = data.labels.numpy()
    few = np.concatenate([np.flatnonzero(labels == c)[: 2 if c == 3 else 6] for c in range(4)])
    thin = ImageSet(data.images[few], data.labels[few], data.classes, "thin")
    with pytest.raises(
        ArchsimError, match="2 training images of class 3; the last-layer fit needs at least 5 per class"
    ):
        transfer_accuracy(digits_model, thin, data)
    with pytest.raises(ArchsimError, match="the alphas need at least 10"):
        pair_transferability(
            digits_model, digits_model, data.images[:5], data.labels[:5], create_attack("pgd", eps=0.1, steps=2)
        )


def test_last_layer_transfer_of_a_digits_model_to_its_own_task_is_accurate(digits_model):
    train, test = load_data("digits", split="train"), load_data("digits")
    assert transfer_accuracy(digits_model, train, test) > 95


def test_correlations_pooled_within_and_per_architecture():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"architecture": np.repeat(["a", "b"], 5), "overlap": np.tile([0, 25, 50, 75, 100], 2)})
    for metric in METRICS:
        table[metric] = rng.normal(size=10)
    # Within each architecture accuracy rises with alpha_1, but architecture b sits higher in alpha_1 and lower in
    # accuracy.
    table["alpha_1_S_T"] = table["overlap"] / 100 + np.where(table["architecture"] == "b", 5.0, 0.0)
    table["transfer_accuracy"] = 90 + table["overlap"] / 20 - np.where(table["architecture"] == "b", 20.0, 0.0)
    found = knowledge_correlations(table).set_index(["group", "metric"])
    assert found.loc[("all", "alpha_1_S_T"), "spearman"] < 0
    assert found.loc[("within architecture", "alpha_1_S_T"), "spearman"] == pytest.approx(1.0)
    assert found.loc[("a", "alpha_1_S_T"), "pearson"] == pytest.approx(1.0)
    assert "between architectures" not in found.index.get_level_values(0)  # two means say nothing
    # A third architecture: the means (alpha_1 0.5, 5.5, 2.5; accuracy 92.5, 72.5, 84.5) fall on a line.
    third = table[table["architecture"] == "a"].assign(
        architecture="c",
        alpha_1_S_T=lambda t: t["alpha_1_S_T"] + 2,
        transfer_accuracy=lambda t: t["transfer_accuracy"] - 8,
    )
    found = knowledge_correlations(pd.concat([table, third])).set_index(["group", "metric"])
    between = found.loc[("between architectures", "alpha_1_S_T")]
    assert (
        between["sources"] == 3
        and between["pearson"] == pytest.approx(-1.0)
        and between["spearman"] == pytest.approx(-1.0)
    )
    assert list(found.index.get_level_values(0).unique()) == [
        "all",
        "within architecture",
        "between architectures",
        "a",
        "b",
        "c",
    ]


def test_knowledge_transfer_command_end_to_end(cache_dir, tmp_path, capsys):
    out = tmp_path / "kt"
    code, stdout, err = run_cli(
        capsys,
        "knowledge-transfer",
        "--architectures",
        "resnet-s0",
        "--overlaps",
        "0,50,100",
        "--epochs",
        "4",
        "--steps",
        "10",
        "--cache",
        str(cache_dir),
        "--out",
        str(out),
    )
    assert code == 0, err
    sources = pd.read_csv(out / "knowledge_sources.csv")
    assert list(sources["overlap"]) == [0, 50, 100] and list(sources["classes"].astype(str).str.zfill(4)) == [
        "4567",
        "0145",
        "0123",
    ]
    assert sources["transfer_accuracy"].between(0, 100).all() and (sources["alpha_1_S_T"] > 0).all()
    correlations = pd.read_csv(out / "knowledge_correlations.csv")
    assert set(correlations["metric"]) == set(METRICS) and (correlations["sources"] == 3).all()
    from scipy import stats

    for row in correlations[correlations.group == "all"].itertuples():  # each from the sources' table by scipy
        x, y = sources[row.metric].to_numpy(float), sources["transfer_accuracy"].to_numpy(float)
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            assert row.spearman == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-6), row.metric
            assert row.pearson == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-5), row.metric
        else:
            assert np.isnan(row.spearman)
    assert (out / "knowledge_transfer.png").stat().st_size > 10_000
    for args, message in (
        (["--overlaps", "0,30,100"], "overlap 30 % is not one of"),
        (["--overlaps", "0,100"], "at least 3 overlaps"),
        (["--architectures", "nope"], "unknown architecture 'nope'"),
        (["--overlaps", "a,b"], "must be whole percentages"),
    ):
        code, _, err = run_cli(
            capsys, "knowledge-transfer", *args, "--cache", str(cache_dir), "--out", str(tmp_path / "bad")
        )
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "bad").exists()


def test_the_experiment_on_a_run_refuses_a_run_that_is_not_on_digits(tmp_path):
    import json

    from archsim.errors import ParameterError
    from archsim.knowledge.overlap import overlap_on_run

    (tmp_path / "run").mkdir()
    settings = {
        "models": ["zoo:resnet-s0", "zoo:vit"],
        "data": "npz:/photos.npz",
        "n_images": None,
        "seed": 0,
        "attack": {"name": "pgd", "eps": 0.1},
        "eps_s": 1.0,
        "n_boot": 0,
    }
    (tmp_path / "run" / "settings.json").write_text(json.dumps(settings))
    (tmp_path / "run" / "config.json").write_text(json.dumps({"settings": settings}))
    with pytest.raises(ParameterError) as error:
        overlap_on_run(tmp_path / "run", ("resnet-s0",))
    assert error.value.parameter == "run_dir" and "the data-overlap experiment is on digits" in str(error.value)
    assert not (tmp_path / "run" / "knowledge").exists()
