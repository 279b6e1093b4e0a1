import math
import warnings
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
    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding
    from sklearn.metrics import adjusted_rand_score

    sat = read_matrix(MATRIX)
    ours = spectral_clusters(sat, k=10, seed=0)
    affinity = sat.to_numpy().copy()
    np.fill_diagonal(affinity, 0)
    embedding = spectral_embedding(affinity, n_components=10, norm_laplacian=True, drop_first=False, random_state=0)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    reference = KMeans(10, n_init=1000, random_state=0).fit(embedding)  # 1,000 restarts: all 10 seeds find the optimum
    assert adjusted_rand_score(ours.labels, reference.labels_) == pytest.approx(1.0)
    assert ours.search.inertia == pytest.approx(reference.inertia_, rel=1e-9) and ours.search.settled
    # The diagonal plays no part: any other value on it gives the same clusters.
    values = sat.to_numpy().copy()
    np.fill_diagonal(values, 1.0)
    shifted = pd.DataFrame(values, index=sat.index, columns=sat.columns)
    assert adjusted_rand_score(spectral_clusters(shifted, k=10, seed=0).labels, ours.labels) == 1.0
    # The same clusters, labels and all, whatever the K-means seed (100 restarts each gave ARI 0.728-0.871 against the
    # paper's Table 1 for seeds 0-4, as 2 of 5 seeds missed the lowest objective).
    runs = [spectral_clusters(sat, k=10, seed=seed) for seed in range(10)]
    assert all(run.labels.equals(ours.labels) for run in runs)
    assert {run.search.inertia for run in runs} == {ours.search.inertia}
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
    assert "different hyper-parameters" not in table.index  # no hparams labels: seeds alone within a regime
    assert training_vs_architecture(sat, models.assign(architecture=list("abcdef"))) is None


def test_the_three_training_strategies_and_both_kinds_of_mean():
    """Seeds, hyper-parameters and regimes of one architecture, as the paper's Table 2 separates them, each cell's
    mean as a mean of SAT and as the ln of the mean percentage, by hand."""
    names = [f"m{i}" for i in range(5)]
    values = np.array(
        [
            [4.6, 4.0, 3.6, 3.0, 1.0],
            [4.0, 4.6, 3.4, 3.2, 1.2],
            [3.6, 3.4, 4.6, 2.9, 1.4],
            [3.0, 3.2, 2.9, 4.6, 1.6],
            [1.0, 1.2, 1.4, 1.6, 4.6],
        ]
    )
    sat = pd.DataFrame(values, index=names, columns=names)
    models = pd.DataFrame(
        {
            "model": names,
            "architecture": ["a", "a", "a", "a", "b"],
            "regime": ["std", "std", "std", "aug", "std"],
            "hparams": ["lr=1", "lr=1", "lr=2", "lr=1", "lr=1"],
            "seed": [0, 1, 0, 0, 0],
        }
    )
    table = training_vs_architecture(sat, models).set_index("comparison")
    assert list(table.index) == [
        "different seeds",
        "different hyper-parameters",
        "different training regimes",
        "different architectures",
    ]
    expected = {
        "different seeds": [4.0],  # m0-m1: one regime and hparams, seeds 0 and 1
        "different hyper-parameters": [3.6, 3.4],  # m0-m2, m1-m2: one regime, lr=1 against lr=2
        "different training regimes": [3.0, 3.2, 2.9],  # m3 against m0, m1, m2
        "different architectures": [1.0, 1.2, 1.4, 1.6],
    }
    for name, cells in expected.items():
        assert table.loc[name, "pairs"] == len(cells)
        assert table.loc[name, "mean_sat"] == pytest.approx(sum(cells) / len(cells), abs=1e-12)
        percent = sum(math.exp(c) for c in cells) / len(cells)
        assert table.loc[name, "ln_mean_percent"] == pytest.approx(math.log(percent), abs=1e-12)
    hparams = table.loc["different hyper-parameters"]
    assert hparams.ln_mean_percent > hparams.mean_sat  # the ln of a mean exceeds the mean of lns
    # A model without an hparams label (empty, or missing as a CSV reads it) is compared by seed alone; a table
    # without the column (a run folder from before it) labels none.
    for missing in ("", None):
        unlabelled = training_vs_architecture(sat, models.assign(hparams=["lr=1", missing, "lr=2", "lr=1", "lr=1"]))
        assert unlabelled.set_index("comparison").loc["different seeds", "pairs"] == 2  # m0-m1, m1-m2
    old = training_vs_architecture(sat, models.drop(columns="hparams")).set_index("comparison")
    assert "different hyper-parameters" not in old.index and old.loc["different seeds", "pairs"] == 2  # m0-m1, m1-m2


@needs_release
def test_the_paper_averages_percentages_on_the_published_matrix():
    """The published matrix's off-diagonal mean is 2.665 as a mean of SAT and 2.721 as the ln of the mean percentage;
    the paper reports 2.73 across architectures, which the second reproduces."""
    from archsim.analysis.training import mean_both_ways

    values = pd.read_csv(MATRIX, index_col=0).to_numpy(dtype=float)
    off = values[~np.eye(len(values), dtype=bool)]
    mean_sat, ln_mean_percent = mean_both_ways(off)
    assert mean_sat == pytest.approx(off.mean()) and round(mean_sat, 3) == 2.665
    assert ln_mean_percent == pytest.approx(np.log(np.exp(off).mean())) and round(ln_mean_percent, 3) == 2.721
    assert abs(ln_mean_percent - 2.73) < abs(mean_sat - 2.73)
    assert all(math.isnan(v) for v in mean_both_ways([np.nan]))


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


def test_the_defaults_are_the_papers_settings():
    """The settings the SAT paper's analysis used (docs/analysis.md); a changed default changes every user's table."""
    import inspect

    from archsim.analysis.keywords import cluster_keywords as keywords

    defaults = lambda f: {n: p.default for n, p in inspect.signature(f).parameters.items() if p.default is not p.empty}  # noqa: E731
    assert defaults(spectral_clusters) == {"k": None, "seed": 0, "max_restarts": 20_000}
    assert defaults(cluster_stability) == {"n_resamples": 30, "keep": 0.8, "seed": 0}
    assert defaults(keywords) == {"top": 5}
    assert defaults(component_importance) == {
        "n_estimators": 500, "max_depth": 12, "min_samples_split": 4, "learning_rate": 0.02, "n_repeats": 10, "seed": 0
    }  # fmt: skip
    from archsim.analysis.training import PAPER_MEANS

    assert {k: v for k, v in PAPER_MEANS.items() if not np.isnan(v)} == {
        "different seeds": 4.2,
        "different training regimes": 3.3,
        "different architectures": 2.7,
    }
    assert list(PAPER_MEANS) == [
        "different seeds",
        "different hyper-parameters",  # Table 2's third strategy; its mean is not in the paper's text
        "different training regimes",
        "different architectures",
    ]


def test_the_spectrum_and_features_by_hand():
    """Equal affinities between all n models: D^-1/2 W D^-1/2 = (J - I) / (n - 1), eigenvalues 1 and -1/(n - 1)
    (n - 1 times), in descending order. Each feature column's largest entry is positive (the sign convention); the
    block picture orders models by cluster, keeping their order within one."""
    n = 5
    equal = pd.DataFrame(np.full((n, n), 2.0) + np.eye(n), index=list("abcde"), columns=list("abcde"))
    result = spectral_clusters(equal, k=2)
    np.testing.assert_allclose(result.eigenvalues, [1.0] + [-1 / (n - 1)] * (n - 1), atol=1e-12)
    blocks = block_matrix().iloc[[0, 3, 1, 4, 2, 5], [0, 3, 1, 4, 2, 5]]
    result = spectral_clusters(blocks, k=2)
    assert result.labels.name == "cluster" and result.eigenvalues[0] == pytest.approx(1.0)
    columns = result.features[np.abs(result.features).argmax(0), range(2)]
    assert (columns > 0).all()
    np.testing.assert_allclose(np.linalg.norm(result.features, axis=1), 1.0)
    distances = result.ordered_distances()
    first = result.labels.iloc[0]
    order = [m for m in blocks.index if result.labels[m] == first] + [
        m for m in blocks.index if result.labels[m] != first
    ]
    if first != min(result.labels):
        order = order[3:] + order[:3]
    assert list(distances.index) == order == list(distances.columns)
    assert distances.to_numpy()[:3, :3] == pytest.approx(0, abs=1e-9) and distances.to_numpy()[0, 3] > 1
    # Two models: no gap to choose k by, so k = 2; k may be every model; small affinities are affinities.
    pair = pd.DataFrame([[4.6, 0.2], [0.2, 4.6]], index=["x", "y"], columns=["x", "y"])
    assert spectral_clusters(pair).k == 2 and spectral_clusters(block_matrix() * 0.1, k=6).k == 6


def test_clustering_refuses_what_it_cannot_cluster_naming_the_pair():
    sat = block_matrix()
    sat.iloc[1, 4] = sat.iloc[4, 1] = np.nan
    message = (
        "SAT of m1 and m4 is undefined (no image both classify correctly; 1 such pairs); cluster models that "
        "classify a shared part of the images, or use more images"
    )
    with pytest.raises(ArchsimError) as error:
        spectral_clusters(sat)
    assert str(error.value) == message
    with pytest.raises(ArchsimError) as error:
        spectral_clusters(block_matrix() - 2)
    assert (
        str(error.value)
        == "the SAT matrix has negative entries; affinities must be >= 0 (use eps_s >= 1, i.e. SAT >= 0)"
    )
    lonely = block_matrix()
    lonely.iloc[0, 1:] = lonely.iloc[1:, 0] = 0.0
    with pytest.raises(ArchsimError) as error:
        spectral_clusters(lonely)
    assert str(error.value) == "a model has zero affinity to every other model; it cannot be clustered"
    with pytest.raises(ArchsimError) as error:
        spectral_clusters(block_matrix(), k=1)
    assert error.value.parameter == "k" and str(error.value) == "k 1 must lie between 2 and the 6 models"


def test_stability_of_one_small_resample():
    """keep x n rounds below k + 1 models: each resample takes k + 1 (the fewest that can split into k clusters and
    leave a choice). Models never drawn have no stability (NaN); a model drawn once has that draw's Jaccard overlap,
    computed here from the reclustering of the drawn models."""
    sat = block_matrix()
    labels = spectral_clusters(sat, k=2).labels
    replicates, per_model = cluster_stability(sat, labels, k=2, n_resamples=1, keep=0.3)
    assert list(replicates.columns) == ["replicate", "models", "ari"] and replicates.models.tolist() == [3]
    assert per_model.name == "stability"
    drawn = per_model.index[per_model.notna()]
    assert len(drawn) == 3 and per_model.isna().sum() == 3
    sub = spectral_clusters(sat.loc[drawn, drawn], k=2).labels.to_numpy()
    full = labels[drawn].to_numpy()
    same_full, same_sub = full[:, None] == full[None], sub[:, None] == sub[None]
    jaccard = (same_full & same_sub).sum(1) / (same_full | same_sub).sum(1)
    np.testing.assert_allclose(per_model[drawn].to_numpy(), jaccard)
    assert replicates.ari.iloc[0] == pytest.approx(adjusted_rand_score(full, sub))


def test_keywords_table_by_hand():
    """TF-IDF as scikit-learn defines it (smooth idf = ln((1 + n) / (1 + df)) + 1, rows scaled to unit length),
    averaged over a cluster's models, ranked from 1; words of components that do not apply ("~" or empty) left out."""
    from archsim.analysis.keywords import card_words

    cards = pd.DataFrame({"Base": ["CNN", "CNN", "ViT"], "Act": ["ReLU", "", "~"]}, index=list("abc"))
    assert card_words(cards.loc["b"]) == ["Base: CNN"] and card_words(cards.loc["c"]) == ["Base: ViT"]
    words = cluster_keywords(cards, pd.Series([0, 0, 1], index=list("abc")))
    assert list(words.columns) == ["cluster", "rank", "word", "score"]
    zero = words[words.cluster == 0]
    # Words a cluster's models do not have follow at score 0, in alphabetical order, up to ``top``.
    assert zero["rank"].tolist() == [1, 2, 3] and zero.word.tolist() == ["Base: CNN", "Act: ReLU", "Base: ViT"]
    idf_cnn, idf_relu = np.log(4 / 3) + 1, np.log(4 / 2) + 1
    a = np.array([idf_cnn, idf_relu]) / np.hypot(idf_cnn, idf_relu)  # model a: both words; b: CNN alone, weight 1
    np.testing.assert_allclose(zero.score, [(a[0] + 1) / 2, a[1] / 2, 0])
    assert words[words.cluster == 1][["rank", "word", "score"]].values.tolist()[0] == [1, "Base: ViT", 1.0]
    six = pd.DataFrame({f"c{i}": ["x", "y"] for i in range(7)}, index=["p", "q"])
    assert len(cluster_keywords(six, pd.Series([0, 1], index=["p", "q"]))) == 2 * 5


def test_training_table_columns_and_the_papers_means():
    sat = block_matrix()
    regimes, seeds = ["s", "s", None, "s", "s", "s"], [0, 1, 0, 0, 0, 1]
    models = pd.DataFrame({"model": sat.index, "architecture": list("aaabbb"), "regime": regimes, "seed": seeds})
    table = training_vs_architecture(sat, models)
    assert list(table.columns) == ["comparison", "pairs", "mean_sat", "ln_mean_percent", "std_sat", "paper_mean_sat"]
    assert table.comparison.tolist() == [
        "different seeds",
        "different architectures",
        "same architecture, other differences",
    ]
    rows = table.set_index("comparison")
    # m0-m1, m3-m5, m4-m5 differ by seed; a missing regime is unknown, not a regime of its own (m2 against m0, m1).
    assert rows.loc["different seeds", "pairs"] == 3 and rows.loc["same architecture, other differences", "pairs"] == 3
    assert rows.loc["different seeds", "std_sat"] == 0 and rows.loc["different architectures", "paper_mean_sat"] == 2.7
    assert rows.loc["different seeds", "paper_mean_sat"] == 4.2
    assert np.isnan(rows.loc["same architecture, other differences", "paper_mean_sat"])


def test_importance_columns_and_every_pair():
    from archsim.analysis.importance import pair_features

    sat = block_matrix()
    cards = pd.DataFrame({"Base": list("CCCVVV"), "Act": list("RGRGRG")}, index=sat.index)
    features, target = pair_features(sat, cards)
    assert len(features) == 15 and target.tolist()[:5] == [3.5, 3.5, 1.0, 1.0, 1.0]
    assert features.Base.tolist()[:5] == [0, 0, 1, 1, 1] and features.Act.tolist()[:2] == [1, 0]
    table = component_importance(sat, cards, n_estimators=20, n_repeats=3)
    assert list(table.columns) == ["component", "importance_mean", "importance_std"]
    assert list(table.index) == [0, 1] and table.component.tolist() == ["Base", "Act"]


def test_agreement_at_its_boundaries_and_by_hand():
    """Three models (three pairs) are enough to correlate, two are not; a side whose values span exactly 1 is not
    constant; the table's columns, and the mean (absolute) difference of the off-diagonal entries by hand."""
    from scipy import stats

    from archsim.analysis.agreement import common_models, compare_matrices, matrix_correlations

    names = ["p", "q", "r"]
    a = pd.DataFrame([[4.6, 1.0, 2.0], [1.0, 4.6, 1.5], [2.0, 1.5, 4.6]], index=names, columns=names)
    b = pd.DataFrame([[4.6, 2.0, 2.5], [2.0, 4.6, 4.0], [2.5, 4.0, 4.6]], index=names, columns=names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = matrix_correlations({"a": a, "b": b})
    assert list(table.columns) == ["a", "b", "pairs", "pearson", "pearson_p", "spearman", "spearman_p"]
    x, y = [1.0, 2.0, 1.5], [2.0, 2.5, 4.0]
    row = table.iloc[0]
    assert row.pairs == 3 and row.pearson == pytest.approx(stats.pearsonr(x, y).statistic)
    assert row.pearson_p == pytest.approx(stats.pearsonr(x, y).pvalue)
    assert (row.spearman, row.spearman_p) == pytest.approx(tuple(stats.spearmanr(x, y)))
    with pytest.raises(ArchsimError) as error:
        matrix_correlations({"a": a, "b": a.iloc[::-1, ::-1], "c": a})
    assert str(error.value) == "matrix 'b' lists other models than 'a'; compare matrices of the same models"
    with pytest.raises(ArchsimError) as error:
        matrix_correlations({"a": a.iloc[:2, :2], "b": a.iloc[:2, :2]})
    assert str(error.value) == "2 models give fewer than 3 model pairs to correlate; compare at least 3 models"
    two = b.copy()
    two.loc["p", "q"] = two.loc["q", "p"] = np.nan  # two pairs left, neither side constant
    with pytest.warns(UserWarning, match="b and two: 2 model pairs with finite values in both, fewer than 3"):
        nan_row = matrix_correlations({"b": b, "two": two}).iloc[0]
    assert list(nan_row.index) == list(table.columns) and nan_row[["pearson", "spearman"]].astype(float).isna().all()

    compared, aligned, left_out = compare_matrices({"a": a, "b": b.loc[["r", "q", "p"], ["r", "q", "p"]]})
    assert list(aligned["b"].index) == names and left_out == {"a": [], "b": []}
    assert compared.mean_difference.iloc[0] == pytest.approx(np.mean(np.subtract(y, x)))
    assert compared.mean_abs_difference.iloc[0] == pytest.approx(np.mean(np.abs(np.subtract(y, x))))
    with pytest.raises(ArchsimError) as error:
        common_models({"a": a, "b": b.rename(index={"r": "s"}, columns={"r": "s"})})
    assert str(error.value) == (
        "the matrices share 2 model name(s) (p, q); at least 3 are needed. Models match by their names in the CSV "
        "header: give runs matching names with ,name=DISPLAY"
    )
    with pytest.raises(ArchsimError, match=r"share 0 model name\(s\) \(none\)"):
        common_models({"a": a, "b": b.set_axis(list("xyz")).set_axis(list("xyz"), axis=1)})


def test_the_eigengap_picks_three_blocks_and_the_features_ignore_eigenvector_signs(monkeypatch):
    """Three blocks: three eigenvalues near 1, then a drop; k = 3 is the largest gap. LAPACK may return any sign of an
    eigenvector: negated ones give the same features."""
    import archsim.analysis.clustering as clustering

    blocks = np.repeat(np.arange(3), 3)
    values = np.where(blocks[:, None] == blocks[None, :], 4.0, 0.3)
    np.fill_diagonal(values, 4.6)
    names = [f"m{i}" for i in range(9)]
    sat = pd.DataFrame(values, index=names, columns=names)
    result = spectral_clusters(sat)
    assert result.k == 3 and adjusted_rand_score(blocks, result.labels) == 1.0
    eigh = np.linalg.eigh
    monkeypatch.setattr(clustering.np.linalg, "eigh", lambda m: (lambda w, v: (w, -v))(*eigh(m)))
    np.testing.assert_allclose(spectral_clusters(sat).features, result.features)


def test_kmeans_restarts_are_scikit_learns_lloyd_from_the_same_starts():
    """Each restart's partition and objective are scikit-learn's ``KMeans`` run from the same k-means++ starts; the
    search keeps the lowest objective and counts how often it was reached."""
    from sklearn.cluster import KMeans

    from archsim.analysis.clustering import canonical_labels, kmeans_plusplus_starts, kmeans_restarts, lloyd

    points = np.random.default_rng(1).normal(size=(40, 3)) + np.repeat(np.eye(3) * 3, [14, 13, 13], axis=0)
    starts = kmeans_plusplus_starts(points, 4, 30, np.random.default_rng(2))
    assert starts.shape == (30, 4, 3) and all(len(np.unique(s, axis=0)) == 4 for s in starts)
    labels, inertia = lloyd(points, starts)
    for start, own_labels, own_inertia in zip(starts, labels, inertia, strict=True):
        reference = KMeans(4, init=start, n_init=1, algorithm="lloyd", tol=0).fit(points)
        assert adjusted_rand_score(reference.labels_, own_labels) == 1.0
        assert own_inertia == pytest.approx(reference.inertia_, rel=1e-9)
    chosen, search = kmeans_restarts(points, 4, seed=0)
    best = KMeans(4, n_init=500, random_state=0).fit(points)
    assert search.inertia == pytest.approx(best.inertia_, rel=1e-9) and adjusted_rand_score(chosen, best.labels_) == 1
    assert search.settled and search.hits >= 5 and search.restarts % 100 == 0
    assert search.runner_up_inertia > search.inertia and 0 <= search.runner_up_ari < 1
    assert list(canonical_labels(np.array([2, 2, 0, 1, 0]))) == [0, 0, 1, 2, 1]
    assert chosen[0] == 0 and list(np.unique(chosen[np.sort(np.unique(chosen, return_index=True)[1])])) == [0, 1, 2, 3]
    assert "reached by" in search.describe() and "next-best partition" in search.describe()


def test_kmeans_lloyd_by_hand_an_emptied_cluster_keeps_its_centre_and_a_single_point_draws_its_own():
    """Two cases worked by hand (1-d points): a centre no point is nearest stays where it is, and a cluster of one
    point moves onto it; the first iteration's labels are compared with none (a start whose labels happen to be all
    one cluster still updates its centres)."""
    from archsim.analysis.clustering import lloyd

    # All three points nearest 1.5: that centre moves to their mean, 1; the one at 100 keeps its place.
    labels, inertia = lloyd(np.array([[0.0], [1.0], [2.0]]), np.array([[[100.0], [1.5]]]))
    assert labels.tolist() == [[1, 1, 1]] and inertia.tolist() == [2.0]  # 1 + 0 + 1
    # 0 alone nearest 5: that centre moves onto 0; 10 and 11 share the other, which moves to 10.5.
    labels, inertia = lloyd(np.array([[0.0], [10.0], [11.0]]), np.array([[[5.0], [11.0]]]))
    assert labels.tolist() == [[0, 1, 1]] and inertia.tolist() == [0.5]  # 0 + 0.25 + 0.25


def test_kmeans_plusplus_never_starts_two_centres_on_one_point_while_another_is_free():
    """k-means++ draws each next centre with probability proportional to the squared distance to the nearest centre:
    a point already chosen (or a copy of it) has none, however small the distances (here below 1)."""
    from archsim.analysis.clustering import kmeans_plusplus_starts

    points = np.array([[0.0], [0.0], [0.3]])
    starts = kmeans_plusplus_starts(points, 2, 2000, np.random.default_rng(0))
    assert (starts[:, 0, 0] != starts[:, 1, 0]).all()
    assert 0.2 < np.mean(starts[:, 0, 0] == 0.3) < 0.45  # the first centre uniform over the three points


def test_a_search_that_finds_one_partition_and_one_that_does_not_settle(monkeypatch):
    from archsim.analysis import clustering

    two_blobs = np.array([[0.0, 0], [0, 0.1], [5, 5], [5, 5.1]])
    labels, search = clustering.kmeans_restarts(two_blobs, 2, seed=0)
    assert list(labels) == [0, 0, 1, 1] and search.restarts == 100 and search.hits == 100
    assert np.isnan(search.runner_up_inertia) and "every restart found the same partition" in search.describe()
    # More hits asked than restarts allowed: it stops at the cap and says so.
    monkeypatch.setattr(clustering, "MIN_HITS", 10**6)
    points = np.random.default_rng(0).normal(size=(30, 2))
    _, search = clustering.kmeans_restarts(points, 6, seed=0, max_restarts=300)
    assert search.restarts == 300 and not search.settled and "not settled within 300 restarts" in search.describe()


def test_the_component_baseline_by_hand_and_where_components_decide_sat():
    from sklearn.preprocessing import OneHotEncoder

    from archsim.analysis.baseline import card_similarity, component_baseline, describe_baseline, one_hot_cards

    cards = pd.DataFrame(
        {"Base": ["CNN", "CNN", "CNN", "ViT", "ViT", "ViT"], "Act": ["ReLU", "ReLU", "GELU", "GELU", "GELU", None]},
        index=[f"m{i}" for i in range(6)],
    )
    encoded = OneHotEncoder(sparse_output=False).fit_transform(cards.fillna("~"))
    ours = one_hot_cards(cards)
    assert sorted(map(tuple, ours.to_numpy())) == sorted(map(tuple, encoded))
    assert set(ours.columns) == {"Base: CNN", "Base: ViT", "Act: ReLU", "Act: GELU", "Act: ~"}
    similarity = card_similarity(cards)
    assert similarity.loc["m0", "m1"] == 1 and similarity.loc["m2", "m3"] == 0.5 and similarity.loc["m0", "m5"] == 0
    # SAT clusters that follow the base architecture: the cards alone find them (ARI 1); clusters that cut across
    # it (m0-m2 with m3, the rest apart) do not.
    by_base = pd.Series([0, 0, 0, 1, 1, 1], index=cards.index)
    table = component_baseline(cards, by_base, 2)
    assert table.method.tolist() == [
        "K-means on the one-hot components",
        "spectral clustering of the components' similarity",
    ]
    assert table.ari_vs_sat_clusters.tolist() == [1.0, 1.0] and table.settled.all()
    across = pd.Series([0, 1, 0, 1, 0, 1], index=cards.index)
    table = component_baseline(cards, across, 2)
    for row in table.itertuples():
        labels = np.array(row.labels.split(), dtype=int)
        assert (
            row.ari_vs_sat_clusters == pytest.approx(adjusted_rand_score(across, labels))
            and row.ari_vs_sat_clusters < 0.2
        )
    assert "K-means on the one-hot components" in describe_baseline(table)


@needs_release
def test_the_component_baseline_on_the_published_matrix():
    """The paper's point: clusters of the components alone are not SAT's (ARI 0.31-0.41 for K-means on the one-hot
    cards and 0.43-0.48 for spectral clustering of their similarity over seeds 0-3, measured 2026-12-04)."""
    from archsim.analysis.baseline import component_baseline

    sat = read_matrix(MATRIX)
    cards = cards_for(read_cards(CARDS), list(sat.index))
    table = component_baseline(cards, spectral_clusters(sat, k=10).labels, 10)
    assert table.ari_vs_sat_clusters.round(3).tolist() == [0.413, 0.465] and (table.restarts == 2000).all()
    for row in table.itertuples():
        labels = np.array(row.labels.split(), dtype=int)
        assert len(set(labels)) == 10 and len(labels) == 69


def test_the_search_says_how_firm_the_partition_is_in_one_line():
    import dataclasses

    from archsim.analysis import clustering
    from archsim.analysis.clustering import KMeansSearch

    search = KMeansSearch(600, 5, 16.0, 16.1, 0.97)
    assert search.describe() == (
        "K-means: the lowest objective 16.0000 reached by 5 of 600 restarts; the next-best partition 16.1000 "
        "(+0.1000, 0.63 %), ARI 0.970 against it"
    )
    assert search.settled and search.max_restarts == clustering.MAX_RESTARTS == 20_000
    assert (clustering.ROUND, clustering.MIN_HITS) == (100, 5)
    alone = KMeansSearch(100, 100, 2.5, float("nan"), float("nan"))
    assert alone.describe() == (
        "K-means: the lowest objective 2.5000 reached by 100 of 100 restarts; every restart found the same partition"
    )
    tentative = KMeansSearch(300, 4, 2.0, 3.0, 0.5, max_restarts=300)
    assert tentative.describe().endswith("(+1.0000, 50.00 %), ARI 0.500 against it (not settled within 300 restarts: "
                                         "treat it as tentative)")  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        search.hits = 6


def test_the_search_stops_at_the_fifth_hit_and_not_before():
    """30 random points in 6 clusters, seed 0 (the default): the lowest objective is rare, found for the fifth time in
    the 16th round of 100 (measured 2026-12-04); counting a near miss as a hit, or waiting for a sixth, would stop
    at another round."""
    import inspect

    from archsim.analysis.clustering import kmeans_restarts

    assert inspect.signature(kmeans_restarts).parameters["seed"].default == 0
    points = np.random.default_rng(0).normal(size=(30, 2))
    _, search = kmeans_restarts(points, 6)
    assert (search.restarts, search.hits) == (1600, 5)
    assert search.runner_up_inertia - search.inertia < 0.01 * search.inertia  # a near miss, not a hit
