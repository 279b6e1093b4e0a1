from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from archsim.analysis import (
    cluster_keywords,
    component_importance,
    read_cards,
    read_matrix,
    spectral_clusters,
)
from archsim.analysis.cards import cards_for
from archsim.analysis.run import analyze_matrix
from archsim.analysis.stability import cluster_stability
from archsim.analysis.training import training_vs_architecture
from archsim.errors import ArchsimError
from archsim.report.analyze import analyze

RELEASE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "sat_release"
MATRIX, CARDS = RELEASE / "SAT_release.csv", RELEASE / "Model Feature_release.csv"
needs_release = pytest.mark.needs("sat_release")  # skips where missing, fails under CI=true (conftest)


def block_matrix():
    names = [f"m{i}" for i in range(6)]
    values = np.full((6, 6), 1.0)
    values[:3, :3] = values[3:, 3:] = 3.5
    np.fill_diagonal(values, 4.6)
    return pd.DataFrame(values, index=names, columns=names)


def test_spectral_recovers_blocks_and_eigengap():
    result = spectral_clusters(block_matrix(), seed=0)
    assert result.k == 2
    labels = result.labels.to_numpy()
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]


@needs_release
def test_spectral_clusters_match_scikit_learn_on_the_published_matrix():
    """The independent reference: scikit-learn's spectral embedding of W without its diagonal (its
    Laplacian ignores the diagonal), rows scaled to unit length, K-means. A block-diagonal toy cannot
    tell self-loops or row scaling apart; the published 69 x 69 matrix at the paper's k = 10 can."""
    from itertools import combinations

    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding
    from sklearn.metrics import adjusted_rand_score

    sat = read_matrix(MATRIX)
    ours = spectral_clusters(sat, k=10, seed=0)
    affinity = sat.to_numpy().copy()
    np.fill_diagonal(affinity, 0)
    embedding = spectral_embedding(affinity, n_components=10, norm_laplacian=True, drop_first=False, random_state=0)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    reference = KMeans(10, n_init=100, random_state=0).fit_predict(embedding)
    assert adjusted_rand_score(ours.labels, reference) == pytest.approx(1.0)
    # The diagonal plays no part: any other value on it gives the same clusters.
    values = sat.to_numpy().copy()
    np.fill_diagonal(values, 1.0)
    shifted = pd.DataFrame(values, index=sat.index, columns=sat.columns)
    assert adjusted_rand_score(spectral_clusters(shifted, k=10, seed=0).labels, ours.labels) == 1.0
    # Stable across K-means seeds: mean pairwise ARI of 10 seeds (0.924 measured; 0.842 with self-loops).
    runs = [spectral_clusters(sat, k=10, seed=seed).labels for seed in range(10)]
    assert np.mean([adjusted_rand_score(a, b) for a, b in combinations(runs, 2)]) >= 0.9
    assert min(np.bincount(ours.labels)) > 1  # with self-loops one model formed a cluster of its own


def test_importance_finds_the_component_that_drives_sat():
    sat = block_matrix()
    cards = pd.DataFrame({"driver": ["a"] * 3 + ["b"] * 3, "noise": list("xyxyxy")}, index=sat.index)
    table = component_importance(sat, cards, n_estimators=50, seed=0)
    assert table.component.iloc[0] == "driver"


def test_keywords_hand_case():
    cards = pd.DataFrame({"Base": ["CNN", "CNN", "ViT"], "Act": ["ReLU", "ReLU", "~"]}, index=list("abc"))
    words = cluster_keywords(cards, pd.Series([0, 0, 1], index=list("abc")), top=2)
    assert set(words[words.cluster == 0].word) == {"Base: CNN", "Act: ReLU"}
    assert words[words.cluster == 1].word.tolist()[0] == "Base: ViT"


@needs_release
@pytest.mark.slow
def test_published_matrix_analysis_is_deterministic(tmp_path):
    first = analyze(MATRIX, CARDS, tmp_path / "a", k=10, seed=0)
    analyze(MATRIX, CARDS, tmp_path / "b", k=10, seed=0, report=False)  # the tables are compared; one report suffices
    tables = first.tables()
    assert {"clusters.csv", "importance.csv", "keywords.csv", "stability.csv"} <= set(tables)
    for name in tables:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "report.html").is_file()
    assert first.clusters.cluster.nunique() == 10
    # The SAT paper's finding: base architecture and stem lead the importance ranking.
    assert set(first.importance.component.head(2)) == {"Base architecture", "Stem layer"}
    assert len(first.keywords) == 50
    assert 0.5 < first.stability.ari.mean() <= 1.0 and first.clusters.stability.between(0, 1).all()


def test_stability_is_perfect_on_clean_blocks():
    sat = block_matrix()
    reps, per_model = cluster_stability(sat, spectral_clusters(sat, k=2).labels, k=2, n_resamples=10)
    assert reps.ari.eq(1.0).all() and per_model.eq(1.0).all()


def test_stability_against_given_labels_counts_each_replicate_by_hand():
    """Clean blocks of 4 recluster into the blocks in every replicate, so against labels that swap two models between
    blocks each replicate's ARI and each model's Jaccard overlap are known from the kept models alone, counted here
    with sets."""
    names = [f"m{i}" for i in range(12)]
    blocks = np.repeat(np.arange(3), 4)
    values = np.where(blocks[:, None] == blocks[None, :], 4.0, 0.5)
    sat = pd.DataFrame(values, index=names, columns=names)
    given = blocks.copy()
    given[[0, 4]] = given[[4, 0]]
    reps, per_model = cluster_stability(sat, pd.Series(given, index=names), k=3, n_resamples=8, keep=0.75, seed=3)
    rng = np.random.default_rng(3)
    overlaps = {i: [] for i in range(12)}
    for replicate in range(8):
        kept = np.sort(rng.choice(12, size=9, replace=False))
        assert reps.ari[replicate] == pytest.approx(adjusted_rand_score(given[kept], blocks[kept]))
        for i in kept:
            before = {j for j in kept if given[j] == given[i]}
            after = {j for j in kept if blocks[j] == blocks[i]}
            overlaps[i].append(len(before & after) / len(before | after))
    assert reps.ari.lt(1).any() and reps.models.eq(9).all()
    expected = [np.mean(overlaps[i]) if overlaps[i] else np.nan for i in range(12)]
    np.testing.assert_allclose(per_model.to_numpy(), expected)
    assert per_model["m0"] < 1 and per_model["m11"] == 1


def test_training_vs_architecture_groups_pairs():
    sat = block_matrix()  # m0-m2 one architecture, m3-m5 another
    models = pd.DataFrame(
        {
            "model": sat.index,
            "architecture": ["a", "a", "a", "b", "b", "b"],
            "regime": ["standard", "standard", "ls", "", "", ""],
            "seed": [0, 1, 0, None, None, None],
        }
    )
    table = training_vs_architecture(sat, models).set_index("comparison")
    assert table.loc["different seeds", "pairs"] == 1 and table.loc["different seeds", "mean_sat"] == 3.5
    assert table.loc["different training regimes", "pairs"] == 2
    assert (
        table.loc["different architectures", "pairs"] == 9 and table.loc["different architectures", "mean_sat"] == 1.0
    )
    assert table.loc["same architecture, other differences", "pairs"] == 3
    assert training_vs_architecture(sat, models.assign(architecture=list("abcdef"))) is None


def test_k_larger_than_models_is_one_line_error(tmp_path):
    with pytest.raises(ArchsimError, match="more than the 6 models"):
        analyze_matrix(block_matrix(), k=7)


def write(tmp_path, frame, name="m.csv"):
    path = tmp_path / name
    frame.to_csv(path)
    return path


def test_bad_matrices(tmp_path):
    sat = block_matrix()
    with pytest.raises(ArchsimError, match="not square"):
        read_matrix(write(tmp_path, sat.iloc[:, :5]))
    skew = sat.copy()
    skew.iloc[0, 1] = 0.0
    with pytest.raises(
        ArchsimError, match=r"not symmetric \(largest gap 3.5\), but a SAT matrix is; give the symmetric sat.csv"
    ):
        read_matrix(write(tmp_path, skew))
    sat.to_csv(tmp_path / "semicolons.csv", sep=";")
    with pytest.raises(ArchsimError, match="is separated by ';'; save it with commas"):
        read_matrix(tmp_path / "semicolons.csv")
    twice = sat.rename(index={"m1": "m0"}, columns={"m1": "m0"})
    with pytest.raises(ArchsimError, match="lists 'm0' twice; each model once"):
        read_matrix(write(tmp_path, twice, "twice.csv"))
    with pytest.raises(ArchsimError, match="between 2 and the 6 models"):
        spectral_clusters(sat, k=7)


@needs_release
def test_names_missing_from_cards():
    cards = read_cards(CARDS)
    with pytest.raises(ArchsimError, match="has no card"):
        cards_for(cards, ["resnet50", "not_a_model"])


def test_matrix_correlations():
    from archsim.analysis.agreement import matrix_correlations

    sat = block_matrix()
    noisy = sat + np.random.default_rng(0).normal(0, 0.01, sat.shape)
    noisy = (noisy + noisy.T) / 2
    table = matrix_correlations({"a": sat, "b": np.exp(sat), "c": noisy})
    ab = table[(table.a == "a") & (table.b == "b")].iloc[0]
    assert ab.pairs == 15 and np.isclose(ab.spearman, 1.0) and ab.pearson < 1.0
    with pytest.raises(ArchsimError, match="other models"):
        matrix_correlations({"a": sat, "b": sat.iloc[::-1, ::-1]})
    with pytest.raises(ArchsimError, match="2 models give fewer than 3 model pairs"):
        matrix_correlations({"a": sat.iloc[:2, :2], "b": sat.iloc[:2, :2]})
    # Too few finite pairs, or a constant side: NaN and a warning, the other comparisons kept.
    sparse = sat.copy()
    sparse.iloc[:, 2:] = sparse.iloc[2:, :] = np.nan
    flat = sat * 0 + 1.5
    with pytest.warns(UserWarning) as caught:
        table = matrix_correlations({"a": sat, "sparse": sparse, "flat": flat})
    assert sorted(str(w.message) for w in caught) == [
        "a and flat: 15 model pairs with finite values in both, constant in one; their correlation is NaN",
        "a and sparse: 1 model pairs with finite values in both, fewer than 3; their correlation is NaN",
        "sparse and flat: 1 model pairs with finite values in both, fewer than 3; their correlation is NaN",
    ]
    assert table.pairs.tolist() == [1, 15, 1] and table[["pearson", "spearman_p"]].isna().all().all()


@needs_release
def test_compare_matrices_on_the_models_they_share(tmp_path, capsys):
    """A matrix of 12 published models in another order, squared, one pair unknown, plus a model of its own."""
    from itertools import combinations

    from scipy import stats

    from archsim.tests.cli_runner import run_cli

    published = read_matrix(MATRIX)
    shared = list(published.index[5:17])
    mine = published.loc[shared[::-1], shared[::-1]] ** 2
    mine.loc[shared[0], shared[1]] = mine.loc[shared[1], shared[0]] = np.nan
    mine["extra"], mine.loc["extra"] = 1.0, 1.0
    mine.to_csv(tmp_path / "mine.csv")
    code, stdout, err = run_cli(
        capsys, "compare-matrices", str(MATRIX), str(tmp_path / "mine.csv"), "--out", str(tmp_path / "cmp")
    )
    assert code == 0, err
    assert "12 models in common" in stdout and "left out of mine: extra (1)" in stdout
    assert "left out of SAT_release: " in stdout and "(57)" in stdout
    row = pd.read_csv(tmp_path / "cmp" / "matrix_correlations.csv").iloc[0]
    # By hand: every unordered pair of the shared models both matrices give a number for.
    pairs = [(a, b) for a, b in combinations(shared, 2) if {a, b} != set(shared[:2])]
    x = np.array([published.loc[a, b] for a, b in pairs])
    y = np.array([published.loc[a, b] ** 2 for a, b in pairs])
    assert (row.a, row.b, row.pairs) == ("SAT_release", "mine", 65)
    assert np.isclose(row.spearman, 1.0) and np.isclose(row.pearson, stats.pearsonr(x, y).statistic, atol=1e-5)
    assert (
        np.isclose(row.mean_difference, np.mean(y - x), atol=1e-5)
        and (tmp_path / "cmp" / "matrix_comparison.png").is_file()
    )

    few = published.iloc[:2, :2]
    few.to_csv(tmp_path / "few.csv")
    mine.loc[shared[2], shared[3]] = np.nan  # unknown one way only
    mine.to_csv(tmp_path / "lopsided.csv")
    for args, message in (
        ([str(MATRIX), str(tmp_path / "few.csv")], "the matrices share 2 model name(s)"),
        ([str(MATRIX), str(tmp_path / "none.csv")], "does not exist"),
        ([str(MATRIX), str(tmp_path)], "is a folder without sat.csv"),
        ([str(MATRIX), str(tmp_path / "lopsided.csv")], "is not symmetric"),
        ([str(MATRIX)], "needs at least two matrices"),
        ([str(MATRIX), str(MATRIX), "--out", str(tmp_path / "few.csv")], "is a file; choose a folder"),
        ([str(MATRIX), str(MATRIX), "--out", str(tmp_path / "few.csv" / "sub")], "few.csv is a file; choose a folder"),
    ):
        code, stdout, err = run_cli(capsys, "compare-matrices", *args)
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert stdout == ""  # refused before any result was shown


def test_permutation_importance_on_distinct_rows_equals_the_models_own():
    """DistinctRows predicts each distinct pair-feature row once; the importances stay those of the model itself."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.inspection import permutation_importance

    from archsim.analysis.importance import DistinctRows, pair_features

    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(25)]
    cards = pd.DataFrame(rng.integers(0, 3, (25, 5)).astype(str), index=names, columns=list("abcde"))
    features, _ = pair_features(pd.DataFrame(np.zeros((25, 25)), index=names, columns=names), cards)
    target = features.to_numpy() @ [1.0, 0.5, 0.2, 0.0, 0.1] + rng.normal(0, 0.1, len(features))
    model = GradientBoostingRegressor(n_estimators=50, max_depth=4, random_state=0).fit(features, target)
    plain = permutation_importance(model, features, target, n_repeats=5, random_state=0)
    distinct = permutation_importance(DistinctRows(model), features, target, n_repeats=5, random_state=0)
    assert np.array_equal(plain.importances, distinct.importances)
    assert len(np.unique(features.to_numpy(), axis=0)) < len(features)
