"""The decision tools on hand-made inputs: ensembles, selection, teachers, clusters, checks."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from archsim.analysis.cards import CARD_COLUMNS, NAME_COLUMN
from archsim.applications import diverse_sample
from archsim.applications.checks import identical_misclassifications
from archsim.applications.distill import (
    MEASURED_RULE,
    PAPER_RULE,
    distill_correlations,
    recommend_teachers,
)
from archsim.applications.ensembles import (
    k_from_l,
    most_diverse_set,
    pair_table,
    set_scores,
    study_ensembles,
)
from archsim.applications.newcomer import assign_cluster
from archsim.errors import ArchsimError
from archsim.measures.comparison import ensemble_err
from archsim.transfer import TransferResult


def one_hot_logits(predictions, classes=3):
    return np.eye(classes)[np.asarray(predictions)] * 2.0


def test_set_scores_by_hand():
    labels = np.array([0, 1, 2, 0])
    logits = np.stack(
        [
            one_hot_logits([0, 1, 1, 1]),  # wrong on images 2, 3
            one_hot_logits([0, 2, 2, 1]),  # wrong on images 1, 3
            one_hot_logits([0, 1, 2, 0]),  # right everywhere
        ]
    )
    sat = np.array([[4.6, 1.0, 2.0], [1.0, 4.6, 3.0], [2.0, 3.0, 4.6]])
    # Models 0+1: image 1 ties (classes 1 and 2 at 1.0 each; argmax takes 1, right), image 2 ties (1 vs 2: wrong),
    # image 3 both say 1: wrong. Ensemble error 2/4 = 50 %, members 50 % each.
    scores = set_scores(logits, labels, sat, (0, 1))
    assert scores == {"error": 50.0, "mean_member_error": 50.0, "err_reduction": 0.0, "all_wrong": 1, "mean_sat": 1.0}
    scores = set_scores(logits, labels, sat, (0, 1, 2))
    assert scores["error"] == 25.0 and scores["all_wrong"] == 0
    assert math.isclose(scores["mean_member_error"], 100 / 3) and math.isclose(scores["err_reduction"], 0.25)
    assert math.isclose(scores["mean_sat"], 2.0)


def test_pair_table_agrees_with_the_measures_implementation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    logits = rng.normal(size=(5, 200, 5)) + 1.5 * np.eye(5)[labels][None]
    sat = rng.uniform(0, 4, (5, 5))
    sat = (sat + sat.T) / 2
    table = pair_table([f"m{i}" for i in range(5)], logits, labels, sat)
    reference = ensemble_err(logits, labels)
    assert len(table) == 10 and table["sat"].is_monotonic_increasing
    for row in table.itertuples():
        a, b = int(row.a[1:]), int(row.b[1:])
        assert math.isclose(row.err_reduction, reference[a, b]) and row.sat == sat[a, b]


def block_similarity(blocks, size, inside=4.0, outside=0.5):
    labels = np.repeat(np.arange(blocks), size)
    return np.where(labels[:, None] == labels[None, :], inside, outside), labels


def test_k_from_l_enumerates_and_samples_sets_spanning_exactly_l_clusters():
    sat, clusters = block_similarity(3, 2)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 50)
    logits = rng.normal(size=(6, 50, 3))
    names = [f"m{i}" for i in range(6)]
    table = k_from_l(names, logits, labels, sat, clusters, ks=(2, 3))
    counts = {(r.k, r.l): r.sets for r in table.itertuples()}
    assert counts == {(2, 1): 3, (2, 2): 12, (3, 2): 12, (3, 3): 8}  # C(6,2) = 15, C(6,3) = 20
    assert np.allclose(table.loc[table.l == 1, "mean_mean_sat"], 4.0)
    sampled = k_from_l(names, logits, labels, sat, clusters, ks=(3,), max_sets=6)  # forces sampling: C(6,3) > 6
    assert list(sampled.l) == [2, 3] and (sampled.sets <= 2).all()
    for level, mean_sat in zip(sampled.l, sampled.mean_mean_sat, strict=True):
        assert mean_sat == pytest.approx({2: (4 + 0.5 + 0.5) / 3, 3: 0.5}[level])


def test_most_diverse_set_takes_one_model_per_block_exhaustively_and_greedily():
    sat, clusters = block_similarity(3, 4)
    sat = sat + np.random.default_rng(0).uniform(0, 0.1, sat.shape)
    sat = (sat + sat.T) / 2
    for max_sets in (10**6, 1):  # exhaustive, then the greedy path
        chosen = most_diverse_set(sat, 3, max_sets=max_sets)
        assert sorted(clusters[list(chosen)]) == [0, 1, 2]


def test_study_refuses_k_outside_the_zoo_and_scores_the_diverse_choice():
    sat, clusters = block_similarity(2, 2)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)
    logits = rng.normal(size=(4, 40, 3))
    with pytest.raises(ArchsimError, match="between 2 and the 4 models"):
        study_ensembles(list("abcd"), logits, labels, sat, clusters, k=5)
    study = study_ensembles(list("abcd"), logits, labels, sat, clusters, k=2, n_random=50)
    assert study.selection.selection.tolist() == [
        "recommended (error first, then SAT)",
        "lowest mean SAT",
        "highest mean SAT",
        "one from each of 2 clusters (L = K) (mean of 4)",  # a or b with c or d
        "random (mean of 6)",  # C(4, 2) = 6: every pair
    ]
    rows = study.selection.set_index("selection")
    assert rows.loc["lowest mean SAT", "mean_sat"] == 0.5 and rows.loc["highest mean SAT", "mean_sat"] == 4.0
    assert rows.loc["one from each of 2 clusters (L = K) (mean of 4)", "mean_sat"] == 0.5
    # The random baseline at every K, here every set of that K, by hand.
    for row in study.k_table.itertuples():
        every = [set_scores(logits, labels, sat, s)["error"] for s in itertools.combinations(range(4), row.k)]
        assert row.random_sets == len(every) and row.random_mean_error == pytest.approx(np.mean(every))
    assert len(study.pairs) == 6 and study.correlations.loc[0, "n"] == 6
    assert study.correlations.given.tolist()[:3] == ["", "mean_member_error", "mean_member_error"]


def test_the_recommendation_puts_error_first_and_sat_among_comparable_sets():
    """A zoo whose most diverse models are its weakest (the demo's case): the lowest-mean-SAT pair errs most, the
    recommendation is the most accurate pair and, between two pairs of equal error, the less similar one."""
    from archsim.applications.ensembles import RECOMMENDATION_RULE, recommend

    labels = np.arange(100) % 4

    def model(errors_at, confidence):
        """Right with logit 3, and wrong on ``errors_at`` with logit ``confidence``."""
        logits = np.eye(4)[labels] * 3.0
        logits[errors_at] = np.eye(4)[(labels[errors_at] + 1) % 4] * confidence
        return logits

    # Strong models err on 2 images each, unsure (logit 2): any two of them average to no error at all. The weak ones
    # err on 30 images, sure of it (logit 5): they outvote whoever they are averaged with.
    strong = [model(slice(0, 2), 2.0), model(slice(2, 4), 2.0), model(slice(4, 6), 2.0)]
    weak = [model(slice(10, 40), 5.0), model(slice(20, 50), 5.0)]
    logits = np.stack(strong + weak)
    sat = np.array(
        [
            [4.6, 3.0, 3.5, 1.0, 1.1],
            [3.0, 4.6, 3.6, 1.2, 1.3],
            [3.5, 3.6, 4.6, 1.4, 1.5],
            [1.0, 1.2, 1.4, 4.6, 0.5],
            [1.1, 1.3, 1.5, 0.5, 4.6],
        ]
    )
    pairs = list(itertools.combinations(range(5), 2))
    errors = {s: set_scores(logits, labels, sat, s)["error"] for s in pairs}
    assert [errors[s] for s in [(0, 1), (0, 2), (1, 2), (0, 3), (3, 4)]] == [0.0, 0.0, 0.0, 30.0, 40.0]
    # The three strong pairs tie at 0 %; of them the least similar, (0, 1) at SAT 3.0. The lowest-SAT pair (3, 4)
    # would err on 40 % of the images.
    assert recommend(pairs, logits, labels, sat) == (0, 1)
    assert most_diverse_set(sat, 2) == (3, 4)
    assert "lowest ensemble error" in RECOMMENDATION_RULE and "lowest mean SAT" in RECOMMENDATION_RULE
    # Chosen on some images, measured on others: the study reports the error where it was measured.
    held_out = (logits[:, :50], labels[:50])
    study = study_ensembles(
        [f"m{i}" for i in range(5)], logits, labels, sat, np.array([0, 0, 0, 1, 1]), k=2, n_random=10,
        measure_on=held_out,
    )  # fmt: skip
    members = tuple(int(m[1:]) for m in study.recommended["members"])
    assert study.recommended["images"] == 50
    assert members == (0, 1) and study.recommended["error"] == set_scores(*held_out, sat, members)["error"] == 0
    random_errors = [set_scores(*held_out, sat, s)["error"] for s in pairs]
    assert study.recommended["random_mean_error"] == pytest.approx(np.mean(random_errors))
    assert study.recommended["error"] <= study.recommended["random_mean_error"]


def test_partial_correlation_is_the_precision_matrix_formula():
    """Given z, the correlation of x and y is -P_xy / sqrt(P_xx P_yy) of the inverse correlation matrix of (x, y, z)
    (Pearson; Spearman the same on ranks), with p from t on n - 3 degrees of freedom."""
    from scipy import stats

    from archsim.measures.comparison import partial_correlate

    rng = np.random.default_rng(3)
    z = rng.normal(size=60)
    x = z + rng.normal(size=60)
    y = z + 0.3 * x + rng.normal(size=60)
    result = partial_correlate(x, y, z)
    for name, data in (("pearson", (x, y, z)), ("spearman", [stats.rankdata(v) for v in (x, y, z)])):
        precision = np.linalg.inv(np.corrcoef(np.stack(data)))
        r = -precision[0, 1] / math.sqrt(precision[0, 0] * precision[1, 1])
        t = r * math.sqrt(57 / (1 - r * r))
        assert result[name] == pytest.approx(r, abs=1e-12)
        assert result[f"{name}_p"] == pytest.approx(2 * stats.t.sf(abs(t), 57), rel=1e-9)
    assert result["pearson"] < stats.pearsonr(x, y).statistic  # z explained part of it
    assert all(np.isnan(v) for v in partial_correlate(x[:3], y[:3], z[:3]).values())
    assert all(np.isnan(v) for v in partial_correlate(x, y, np.ones(60)).values())


def test_inverse_sampling_is_diverse_and_the_baselines_are_not():
    sat, clusters = block_similarity(3, 4)
    rng = np.random.default_rng(0)
    spread = {}
    for method in ("inverse", "uniform", "proportional"):
        draws = [diverse_sample(sat, 3, method=method, seed=rng) for _ in range(400)]
        assert all(len(set(d)) == 3 for d in draws)
        spread[method] = np.mean([len(set(clusters[d])) == 3 for d in draws])
    # Uniform: 4*4*4 / C(12,3) = 0.29 of draws hit three blocks. Inverse: the second pick leaves the first block with
    # probability 8*2 / (8*2 + 3/4) = 0.96 (weights 1/0.5 against 1/4), the third hits the last block with 0.94.
    assert spread["inverse"] > 0.8 > 0.4 > spread["uniform"] > 0.2 > spread["proportional"]


def test_the_exponent_sharpens_the_sampler():
    """Weights (1 / SAT)^exponent: 0 draws as uniform does, higher exponents leave the first block more often."""
    sat = np.array([[4.6, 4.0, 4.0, 2.0], [4.0, 4.6, 4.0, 2.0], [4.0, 4.0, 4.6, 2.0], [2.0, 2.0, 2.0, 4.6]])
    assert [diverse_sample(sat, 3, method="inverse", seed=s, exponent=0) for s in range(20)] == [
        diverse_sample(sat, 3, method="uniform", seed=s) for s in range(20)
    ]
    rng = np.random.default_rng(0)
    # From one of the first three, the fourth model is drawn with weight 2^-p against 2 * 4^-p:
    # probability 1/2 at exponent 1, 1 / (1 + 2 * 2^-4) = 0.89 at exponent 4.
    leave = {
        p: np.mean([3 in diverse_sample(sat, 2, method="inverse", seed=rng, exponent=p)[1:] for _ in range(2000)])
        for p in (1, 4)
    }
    first_ones = 3 / 4  # draws that start in the block; those starting at model 3 never pick it again
    assert abs(leave[1] - first_ones * 0.5) < 0.04 and abs(leave[4] - first_ones / (1 + 2 / 16)) < 0.04
    with pytest.raises(ArchsimError, match="^exponent must be a finite number >= 0"):
        diverse_sample(sat, 2, exponent=-1)
    # An exponent past what floats hold (SAT**-1e6 overflows) picks the least similar model, not a NaN weight (found by
    # fuzzing).
    first_then_least = [diverse_sample(sat, 2, method="inverse", seed=s, exponent=1e6) for s in range(10)]
    assert all(len(set(pair)) == 2 for pair in first_then_least)


def test_diverse_sample_returns_names_and_refuses_bad_input():
    frame = pd.DataFrame(np.ones((3, 3)), index=list("abc"), columns=list("abc"))
    assert sorted(diverse_sample(frame, 3, seed=0)) == ["a", "b", "c"]
    with pytest.raises(ArchsimError, match="between 1 and the 3"):
        diverse_sample(frame, 4)
    with pytest.raises(ArchsimError, match="non-negative"):
        diverse_sample(-frame, 2)
    with pytest.raises(ArchsimError, match="unknown selection method"):
        diverse_sample(frame, 2, method="greedy")


def test_assign_cluster_by_mean_sat():
    row = pd.Series({"a": 3.0, "b": 2.0, "c": 2.8, "d": 2.9})
    clusters = pd.Series({"a": 0, "b": 0, "c": 1, "d": 1})
    table = assign_cluster(row, clusters)
    assert table.cluster.tolist() == [1, 0] and table.assigned.tolist() == [True, False]
    assert table.mean_sat.tolist() == pytest.approx([2.85, 2.5]) and table.members.tolist() == [2, 2]


def test_identical_misclassifications_by_hand():
    labels = np.array([0, 0, 0])
    # adv_pred[s, t]: s's own set labels its mistakes 1, 2, 1; target copies the mistake on images 0 and 1.
    adv_pred = np.array([[[1, 2, 1], [1, 2, 0]], [[1, 1, 1], [1, 1, 1]]])
    transfer = TransferResult(
        names=["a", "b"],
        specs=["a", "b"],
        labels=labels,
        clean_logits=np.tile(np.eye(3)[[0, 0, 0]], (2, 1, 1)),
        adv_pred=adv_pred,
        fingerprints=["", ""],
        adv_keys=["", ""],
    )
    sat = pd.DataFrame([[4.6, 2.0], [2.0, 4.6]], index=["a", "b"], columns=["a", "b"])
    table = identical_misclassifications(transfer, sat)
    # a -> b: images 0, 1 (b repeats 1, 2); b -> a: a says 1 on all three, b's own says 1: 3 copies. 5 of 6.
    assert table.to_dict("records") == [{"a": "a", "b": "b", "sat": 2.0, "identical": 5, "identical_rate": 100 * 5 / 6}]


def write_run_folder(path, names, sat, bases, models_extra=None):
    path.mkdir()
    pd.DataFrame(sat, index=names, columns=names).to_csv(path / "sat.csv")
    pd.DataFrame({"model": names, "spec": [f"zoo:{n}" for n in names], **(models_extra or {})}).to_csv(
        path / "models.csv", index=False
    )
    cards = pd.DataFrame({column: "x" for column in CARD_COLUMNS}, index=pd.Index(names, name=NAME_COLUMN))
    cards["Base architecture"] = bases
    cards.to_csv(path / "cards.csv")
    (path / "config.json").write_text(json.dumps({"settings": {"models": [f"zoo:{n}" for n in names]}}))


def test_recommend_teachers_follows_the_paper_then_the_measured_accuracies(tmp_path):
    names = ["s", "t1", "t2", "c1", "c2"]
    sat = np.full((5, 5), 4.6)
    for name, value in zip(names[1:], (3.0, 2.0, 1.0, 2.5), strict=True):
        i = names.index(name)
        sat[0, i] = sat[i, 0] = value
    run = tmp_path / "run"
    write_run_folder(run, names, sat, ["Transformer", "Transformer", "Transformer", "CNN", "CNN"])
    table = recommend_teachers(run, "s")
    # The paper's section 5.2: another base architecture first, least similar first; then the same base, most similar
    # first.
    assert table.teacher.tolist() == ["c1", "c2", "t1", "t2"]
    assert table.rule.unique().tolist() == [PAPER_RULE]
    # Measured: distill trained students with c1, t1 and t2; c2's accuracy is predicted from its group's line,
    # which with one measured CNN is the line over all measured teachers (accuracy = 100 - 5 * SAT: 87.5 at 2.5).
    measured = run / "distill" / "s"
    measured.mkdir(parents=True)
    pd.DataFrame(
        {
            "teacher": ["(no teacher)", "t1", "t2", "c1"],
            "sat": [np.nan, 3.0, 2.0, 1.0],
            "same_base": [False, True, True, False],
            "student_accuracy": [80.0, 85.0, 90.0, 95.0],
        }
    ).to_csv(measured / "distill.csv", index=False)
    table = recommend_teachers(run, "s")
    assert table.teacher.tolist() == ["c1", "t2", "c2", "t1"] and table.rule.unique().tolist() == [MEASURED_RULE]
    assert table.set_index("teacher").loc["c2", "student_accuracy"] == pytest.approx(87.5)
    assert table.set_index("teacher").accuracy_from.to_dict() == {
        "c1": "measured",
        "t2": "measured",
        "c2": "predicted",
        "t1": "measured",
    }
    with pytest.raises(ArchsimError, match="not a model of the run"):
        recommend_teachers(run, "nobody")


def test_distill_correlations_split_by_base():
    table = pd.DataFrame(
        {
            "teacher": ["(no teacher)", "a", "b", "c", "d", "e", "f"],
            "teacher_accuracy": [np.nan, 90, 91, 92, 93, 94, 95],
            "same_base": [False, True, True, True, False, False, False],
            "sat": [np.nan, 1, 2, 3, 1, 2, 3],
            "student_accuracy": [80, 81, 82, 83, 83, 82, 81],
        }
    )
    from archsim.measures.comparison import partial_correlate

    correlations = distill_correlations(table)
    result = correlations[correlations.given == ""].set_index("group")
    assert result.loc["same base architecture", "spearman"] == pytest.approx(1.0)
    assert result.loc["different base architecture", "spearman"] == pytest.approx(-1.0)
    assert result.loc["all teachers", "teachers"] == 6 and list(itertools.chain(result.x))[-1] == "teacher_accuracy"
    # SAT given the teacher's accuracy, per group: the partial correlation over the same teachers.
    given = correlations[correlations.given == "teacher_accuracy"].set_index("group")
    assert list(given.index) == ["all teachers", "same base architecture", "different base architecture"]
    taught = table.iloc[1:]
    expected = partial_correlate(
        taught.sat.to_numpy(float), taught.student_accuracy.to_numpy(float), taught.teacher_accuracy.to_numpy(float)
    )
    assert given.loc["all teachers", "pearson"] == pytest.approx(expected["pearson"])
    assert np.isnan(given.loc["same base architecture", "pearson"])  # 3 teachers: too few for a partial correlation


def test_the_samplers_draw_with_the_probabilities_they_state():
    """First model uniform, the second with probability proportional to (its similarity to the first) ** -exponent
    (inverse), ** exponent (proportional) or equal (uniform): each ordered pair's probability by hand against the share
    of 6,000 draws (a share's standard error is at most 0.0065). A similarity of 0 is floored, not refused."""
    sat = np.array([[4.6, 4.0, 0.0], [4.0, 4.6, 2.0], [0.0, 2.0, 4.6]])
    floored = np.maximum(sat, 1e-3)
    for method, exponent, weight in [
        ("inverse", None, lambda v: 1 / v),
        ("inverse", 2.0, lambda v: v**-2.0),
        ("proportional", None, lambda v: v),
        ("uniform", None, lambda v: np.ones_like(v)),
    ]:
        expected = np.zeros((3, 3))
        for first in range(3):
            others = [j for j in range(3) if j != first]
            w = weight(floored[first, others])
            expected[first, others] = w / w.sum() / 3
        rng = np.random.default_rng(0)
        extra = {} if exponent is None else {"exponent": exponent}
        counts = np.zeros((3, 3))
        for _ in range(6000):
            a, b = diverse_sample(sat, 2, method=method, seed=rng, **extra)
            counts[a, b] += 1
        np.testing.assert_allclose(counts / 6000, expected, atol=0.025, err_msg=method)


def test_the_sampler_refuses_bad_input_in_one_line():
    import inspect

    from archsim.applications.selection import compare_samplers

    sat = np.array([[4.6, 3.0], [3.0, 4.6]])
    assert diverse_sample(sat, 1, seed=0) in ([0], [1])  # one model is a selection too
    cases = [
        (np.ones((3, 2)), {}, "the similarity matrix must be square, got shape (3, 2)"),
        (-sat, {}, "the similarity matrix needs finite, non-negative entries (SAT with eps_s >= 1 is)"),
        (sat, {"method": "greedy"}, "unknown selection method 'greedy'; choose from inverse, proportional, uniform"),
        (sat, {"k": 3}, "3 must lie between 1 and the 2 models"),
        (sat, {"k": 0}, "0 must lie between 1 and the 2 models"),
    ]
    for similarity, extra, message in cases:
        with pytest.raises(ArchsimError) as error:
            diverse_sample(similarity, **{"k": 2, **extra})
        assert str(error.value) == (f"k {message}" if "k" in extra else message)
        if "k" in extra:
            assert error.value.parameter == "k"
    assert inspect.signature(diverse_sample).parameters["exponent"].default == 1.0
    assert inspect.signature(compare_samplers).parameters["n_draws"].default == 1000


def sampler_probabilities(sat, method, exponent=1.0):
    """P(first = a, second = b) of a 2-model draw, from the rule as the docs state it: the first uniformly, the second
    in proportion to (max(similarity, 1e-3)) ** -exponent (inverse), ** exponent (proportional) or 1 (uniform)."""
    n = len(sat)
    probability = np.zeros((n, n))
    for first in range(n):
        others = [j for j in range(n) if j != first]
        closest = np.maximum(sat[first, others], 1e-3)
        weight = {"inverse": closest**-exponent, "proportional": closest**exponent, "uniform": np.ones(n - 1)}[method]
        probability[first, others] = weight / weight.sum() / n
    return probability


def test_compare_samplers_summarises_each_samplers_draws_as_the_probabilities_say():
    from archsim.applications.selection import compare_samplers

    sat = np.array([[4.6, 4.0, 0.5], [4.0, 4.6, 1.5], [0.5, 1.5, 4.6]])
    frame = pd.DataFrame(sat, index=list("abc"), columns=list("abc"))
    table = compare_samplers(
        frame, 2, n_draws=4000, seed=3, score=lambda members: {"first": members[0], "size": len(members)}, exponent=2.0
    )
    assert list(table.method) == ["inverse", "proportional", "uniform"]
    assert list(table.columns) == [
        "method",
        "distribution",
        "k",
        "exponent",
        "draws",
        "mean_similarity",
        "mean_first",
        "mean_size",
    ]
    assert table.distribution.tolist() == ["P_1/sim", "P_sim", "uniform"]  # as the paper names them
    assert (table.k == 2).all() and (table.draws == 4000).all() and (table.mean_size == 2).all()
    assert table.exponent.iloc[:2].tolist() == [2.0, 2.0] and np.isnan(table.exponent.iloc[2])
    for row in table.itertuples():
        p = sampler_probabilities(sat, row.method, exponent=2.0)
        pair = p + p.T  # the set {a, b}, drawn in either order; the score sees it sorted
        iu = np.triu_indices(3, k=1)
        expected_similarity = (pair[iu] * sat[iu]).sum()
        expected_first = (pair[iu] * iu[0]).sum()  # the smaller index of the sorted pair
        assert row.mean_similarity == pytest.approx(expected_similarity, abs=0.06), row.method
        assert row.mean_first == pytest.approx(expected_first, abs=0.03), row.method
    # Inverse draws are the most diverse, proportional ones the least, uniform in between.
    assert table.mean_similarity.iloc[0] < table.mean_similarity.iloc[2] < table.mean_similarity.iloc[1]
    # Every sampler draws the whole zoo when k is its size: one value, the mean of the off-diagonal.
    whole = compare_samplers(frame, 3, n_draws=5, seed=0)
    assert whole.mean_similarity.tolist() == pytest.approx([2.0] * 3) and "mean_first" not in whole
    # The seed fixes the draws; another seed gives other ones.
    assert compare_samplers(frame, 2, n_draws=50, seed=1).equals(compare_samplers(frame, 2, n_draws=50, seed=1))
    assert not compare_samplers(frame, 2, n_draws=50, seed=1).equals(compare_samplers(frame, 2, n_draws=50, seed=2))
    with pytest.raises(ArchsimError, match="k must be at least 2 to compare how diverse the drawn sets are"):
        compare_samplers(frame, 1)


def test_select_models_on_a_matrix_file(tmp_path):
    import inspect

    from archsim.applications.selection import compare_samplers, select_models
    from archsim.errors import ParameterError

    names = ["a", "b", "c", "d"]
    sat = np.array([[4.6, 4.2, 4.1, 0.2], [4.2, 4.6, 4.0, 0.3], [4.1, 4.0, 4.6, 0.4], [0.2, 0.3, 0.4, 4.6]])
    path = tmp_path / "sat.csv"
    pd.DataFrame(sat, index=names, columns=names).to_csv(path)
    # Nearly deterministic at a high exponent: after the first (uniform) pick, the model least like it; from a, b or c
    # that is d, and from d the least like d, a.
    for seed in range(8):
        result = select_models(2, matrix=path, exponent=50.0, draws=20, seed=seed)
        assert result.picked in (["a", "d"], ["b", "d"], ["c", "d"], ["d", "a"]) and result.out is None
        assert result.table is not None and result.table.k.tolist() == [2, 2, 2] and (result.table.draws == 20).all()
    assert {tuple(select_models(2, matrix=path, exponent=50.0, draws=1, seed=s).picked)[0] for s in range(20)} == set(
        names
    )
    # The proportional sampler picks the most similar: never d after another model.
    for seed in range(8):
        picked = select_models(2, matrix=path, method="proportional", exponent=50.0, draws=1, seed=seed).picked
        assert "d" not in picked[1:]
    # Written where asked, as the table it returns; one model is a selection with nothing to compare.
    result = select_models(3, matrix=path, draws=30, seed=0, out=tmp_path / "sel")
    assert result.out == tmp_path / "sel" and len(set(result.picked)) == 3 and result.notes == []
    written = pd.read_csv(tmp_path / "sel" / "selection.csv")
    pd.testing.assert_frame_equal(written, result.table, check_exact=False, rtol=1e-5)
    again = select_models(3, matrix=path, draws=30, seed=0, out=tmp_path / "sel")  # an existing folder is reused
    assert again.picked == result.picked and again.table.equals(result.table)
    nested = select_models(2, matrix=path, draws=5, seed=0, out=tmp_path / "a" / "b")  # parents are made
    assert (nested.out / "selection.csv").is_file()
    single = select_models(1, matrix=path, seed=0, out=tmp_path / "one")
    assert single.table is None and single.out is None and not (tmp_path / "one").exists()
    for extra, parameter, message in [
        ({}, "run_dir", "give exactly one of run_dir (a run folder) or a matrix file"),
        (
            {"matrix": path, "run_dir": tmp_path},
            "run_dir",
            "give exactly one of run_dir (a run folder) or a matrix file",
        ),
        ({"matrix": path, "draws": 0}, "draws", "draws must be a positive whole number, got 0"),
        ({"matrix": path, "draws": True}, "draws", "draws must be a positive whole number, got True"),
        ({"matrix": path, "draws": 2.5}, "draws", "draws must be a positive whole number, got 2.5"),
    ]:
        with pytest.raises(ParameterError) as error:
            select_models(2, **extra)
        assert error.value.parameter == parameter and str(error.value) == message
    defaults = {
        name: p.default for name, p in inspect.signature(select_models).parameters.items() if name not in ("k", "cache")
    }
    assert defaults == {
        "run_dir": None,
        "matrix": None,
        "method": "inverse",
        "exponent": 1.0,
        "draws": 1000,
        "seed": 0,
        "out": None,
        "device": "auto",
        "batch_size": "auto",
    }
    sampler_defaults = inspect.signature(compare_samplers).parameters
    assert {name: sampler_defaults[name].default for name in ("n_draws", "seed", "score", "exponent")} == {
        "n_draws": 1000,
        "seed": 0,
        "score": None,
        "exponent": 1.0,
    }
