"""The decision commands on real runs of zoo models: add, ensemble, select, distill, checks."""

import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from archsim import run_sat
from archsim.applications.attacks import compare_attacks
from archsim.applications.newcomer import add_model
from archsim.attacks import FGSM
from archsim.cache import CacheStore
from archsim.errors import ParameterError
from archsim.measures.comparison import ensemble_err
from archsim.models import create_model
from archsim.runs import RunFolder
from archsim.tests.cli_runner import run_cli

# The settings of the CLI tests, so the session cache serves both.
FAST = dict(n_images=60, steps=25, rel_step=0.2, n_boot=200)
THREE = ["zoo:resnet-s0", "zoo:resnet-s1", "zoo:convnext"]


@pytest.fixture(scope="module")
def three_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("three") / "run"
    run_sat(THREE, **FAST, cache=cache_dir, out=out)
    return out


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_add_equals_a_full_recompute_and_costs_one_attack(three_run, cache_dir, tmp_path):
    # trained beforehand, so the misses below are the add's own
    create_model("zoo:resnet-s2", cache=CacheStore(cache_dir))
    newcomer = add_model(three_run, "zoo:resnet-s2", out=tmp_path / "added", cache=cache_dir)
    # One attack and its clean pass, the newcomer on 3 old sets + its own, 3 old models on the new set,
    # and the clean logits of the four models stacked into one entry.
    assert newcomer.run.cache_misses == 2 + 4 + 3 + 1
    fresh = tmp_path / "fresh"
    shutil.copytree(cache_dir / "zoo", fresh / "zoo")  # trained weights only: every set and prediction recomputed
    full = run_sat(THREE + ["zoo:resnet-s2"], **FAST, cache=fresh)
    # ... and the digits at 16 px, the view three of the four models take (convnext takes them as they are, 32 px).
    assert full.cache_misses == 4 * 2 + 16 + 1 + 1
    assert np.allclose(newcomer.run.sat, full.sat, atol=1e-12) and np.allclose(
        newcomer.run.one_sided, full.one_sided, atol=1e-12
    )
    row = newcomer.row.set_index("model")
    assert np.allclose(row["sat"], full.sat.loc["resnet-s2", ["resnet-s0", "resnet-s1", "convnext"]])
    assert np.allclose(row["one_sided_sat"], full.one_sided.loc["resnet-s2", ["resnet-s0", "resnet-s1", "convnext"]])
    assert newcomer.clusters["assigned"].sum() == 1
    for name in ("sat.csv", "models.csv", "config.json", "newcomer.csv", "newcomer_clusters.csv"):
        assert (tmp_path / "added" / name).is_file()
    assert pd.read_csv(tmp_path / "added" / "sat.csv", index_col=0).shape == (4, 4)


def test_add_one_sided_needs_no_adversarial_set_of_the_run(three_run, cache_dir, tmp_path):
    """--one-sided: a cache holding trained weights only (none of the run's sets or predictions) gives the
    newcomer's one-sided row of the full add, attacking the newcomer alone."""
    fresh = tmp_path / "fresh"
    shutil.copytree(cache_dir / "zoo", fresh / "zoo")
    before = snapshot(three_run)
    one = add_model(three_run, "zoo:resnet-s2", out=tmp_path / "one", cache=fresh, one_sided=True)
    assert len(list((fresh / "adv").glob("*/*.bin"))) == 1  # the newcomer's set alone
    full = add_model(three_run, "zoo:resnet-s2", out=tmp_path / "full", cache=cache_dir)
    assert one.run is None and one.name == "resnet-s2"
    assert np.allclose(one.row.set_index("model").one_sided_sat, full.row.set_index("model").one_sided_sat)
    from archsim.analysis import spectral_clusters

    clusters = spectral_clusters(pd.read_csv(three_run / "sat.csv", index_col=0)).labels  # the run was not analysed
    # By hand: the mean one-sided SAT of the newcomer with each cluster's members; it joins the highest.
    row = full.row.set_index("model").one_sided_sat
    means = {c: float(np.mean([row[m] for m in clusters.index if clusters[m] == c])) for c in set(clusters)}
    table = one.clusters.set_index("cluster")
    assert table.mean_sat.to_dict() == pytest.approx(means)
    assert table.members.to_dict() == clusters.value_counts().to_dict()
    assert (
        table.index[table.assigned].tolist() == [max(means, key=means.get)] and table.mean_sat.is_monotonic_decreasing
    )
    for name in ("newcomer.csv", "newcomer_clusters.csv", "one_sided_agreement.csv"):
        assert (tmp_path / "one" / name).is_file()
    assert not (tmp_path / "one" / "sat.csv").exists()  # not a run folder
    # The run's own check: one-sided against symmetric SAT over its 6 ordered pairs.
    assert (
        one.agreement["pairs"] == 6
        and -1 <= one.agreement["pearson"] <= 1
        and one.agreement == {k: v for k, v in full.agreement.items() if not k.startswith("newcomer_")}
    )
    assert isinstance(full.agreement["newcomer_same_cluster"], bool)
    assert snapshot(three_run) == before


def test_add_refuses_bad_input_and_leaves_the_run_alone(three_run, cache_dir, tmp_path, capsys):
    before = snapshot(three_run)
    cases = [
        (["add", "--run", str(three_run), "zoo:resnet-s1", "--cache", str(cache_dir)], "already in the run"),
        (
            ["add", "--run", str(three_run), "zoo:resnet-s2,name=convnext", "--cache", str(cache_dir)],
            "already has a model named 'convnext'",
        ),
        (["add", "--run", str(three_run), "zoo:resnet-s2", "--cache", str(tmp_path / "empty")], "are not in"),
        (["add", "--run", str(tmp_path), "zoo:resnet-s2"], "not a finished run folder"),
        (["ensemble", "--run", str(three_run), "--k", "4", "--cache", str(cache_dir)], "between 2 and the 3 models"),
        (["select", "--run", str(three_run), "--k", "5", "--cache", str(cache_dir)], "between 1 and the 3 models"),
        (["ensemble", "--run", str(three_run), "--random-sets", "0"], "'--random-sets': 0 is not in the range x>=1"),
        (["ensemble", "--run", str(three_run), "--random-sets", "-1"], "'--random-sets': -1 is not in the range x>=1"),
        (["ensemble", "--run", str(three_run), "--clusters", "0"], "'--clusters': 0 is not in the range x>=2"),
        (
            ["ensemble", "--run", str(three_run), "--clusters", "4", "--cache", str(cache_dir)],
            "--clusters 4 must lie between 2 and the 3",
        ),
        (
            ["select", "--run", str(three_run), "--k", "2", "--seed", "-1"],
            "'--seed': -1 is not in the range 0<=x<=4294967295",
        ),
        (
            ["add", "--run", str(three_run), "zoo:resnet-s2,name=../../escaped", "--cache", str(cache_dir)],
            "cannot name a model (it holds a path separator)",
        ),
        (["distill", "--run", str(three_run), "--student", "zoo:vit"], "not a model of the run"),
        (
            [
                "checks",
                "--run",
                str(three_run),
                "--checkpoints",
                "zoo:resnet-s0",
                "--epochs",
                "0",
                "--cache",
                str(cache_dir),
            ],
            "outside 1..19",
        ),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    assert snapshot(three_run) == before
    assert not (tmp_path / "empty" / "zoo").exists()  # refused before the newcomer was trained


def test_ensemble_select_and_checks_on_a_run(three_run, cache_dir, tmp_path, capsys):
    code, stdout, err = run_cli(
        capsys,
        "ensemble",
        "--run",
        str(three_run),
        "--k",
        "2",
        "--cache",
        str(cache_dir),
        "--out",
        str(tmp_path / "ens"),
    )
    assert code == 0, err
    assert "recommended 2-ensemble" in stdout and "rule: the k-set of lowest" in stdout
    # Chosen on the run's 60 images, measured on the other 300 of the split: no worse than random pairs there.
    found = re.search(r"top-1 error ([\d.]+)% on 300 held-out images, random 2-sets ([\d.]+)% on average", stdout)
    assert found and float(found[1]) <= float(found[2]), stdout
    # Scored on every evaluation image: each pair's ERR from the members' logits on the whole split, by a plain loop.
    from archsim.data import load_data
    from archsim.transfer import predict

    evaluation = load_data("digits", split="eval")
    names = [spec.removeprefix("zoo:") for spec in THREE]
    logits = np.stack([predict(create_model(spec, cache=CacheStore(cache_dir)), evaluation.images, 64).numpy()
                       for spec in THREE])  # fmt: skip
    reference = ensemble_err(logits, evaluation.labels.numpy())
    pairs = pd.read_csv(tmp_path / "ens" / "ensemble_pairs.csv")
    assert len(pairs) == 3
    for row in pairs.itertuples():
        assert np.isclose(row.err_reduction, reference[names.index(row.a), names.index(row.b)], equal_nan=True)
    written = "ensemble_correlations.csv, ensemble_k.csv, ensemble_pairs.csv, ensemble_selection.csv, ensembles.png"
    assert f"wrote {written} to {tmp_path / 'ens'}\n" in stdout  # what is on the disk, named from the disk
    assert {p.name for p in (tmp_path / "ens").iterdir()} == set(written.split(", "))
    # On the run's SAT images alone, from the run's own clean logits.
    code, stdout, err = run_cli(
        capsys, "ensemble", "--run", str(three_run), "--k", "2", "--images", "sat", "--cache", str(cache_dir),
        "--out", str(tmp_path / "ens-sat"),
    )  # fmt: skip
    assert code == 0 and "on the run's SAT images" in stdout, err
    # written again with the same content: still this command's files
    code, stdout, err = run_cli(
        capsys, "ensemble", "--run", str(three_run), "--k", "2", "--images", "sat", "--cache", str(cache_dir),
        "--out", str(tmp_path / "ens-sat"),
    )  # fmt: skip
    assert code == 0 and f"wrote {written} to {tmp_path / 'ens-sat'}\n" in stdout, err
    run = run_sat(THREE, **FAST, cache=cache_dir)
    reference = ensemble_err(run.transfer.clean_logits, run.transfer.labels)
    for row in pd.read_csv(tmp_path / "ens-sat" / "ensemble_pairs.csv").itertuples():
        assert np.isclose(row.err_reduction, reference[names.index(row.a), names.index(row.b)], equal_nan=True)

    code, stdout, err = run_cli(
        capsys,
        "select",
        "--run",
        str(three_run),
        "--k",
        "2",
        "--draws",
        "1000",  # 3 models make 3 pairs of similar SAT: 50 draws left the two samplers' means within their noise
        "--cache",
        str(cache_dir),
        "--out",
        str(tmp_path / "sel"),
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "sel" / "selection.csv")
    assert table.method.tolist() == ["inverse", "proportional", "uniform"] and "mean_error" in table
    errors = table.set_index("method").mean_error
    assert ("note: diverse draws err more than uniform ones" in stdout) == (errors["inverse"] > errors["uniform"])
    assert table.mean_similarity.iloc[0] < table.mean_similarity.iloc[1]

    code, stdout, err = run_cli(
        capsys, "checks", "--run", str(three_run), "--cache", str(cache_dir), "--out", str(tmp_path / "chk")
    )
    assert code == 0, err
    identical = pd.read_csv(tmp_path / "chk" / "identical_misclassifications.csv")
    assert len(identical) == 3 and (identical.identical_rate.between(0, 100)).all()


@pytest.fixture(scope="module")
def distilled(three_run, cache_dir):
    """``archsim distill`` on the run: three students of resnet-s0 (no teacher, resnet-s1, convnext), trained once for
    the tests that read them, in whatever order they run."""
    from archsim.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(
            ["distill", "--run", str(three_run), "--student", "resnet-s0", "--teachers", "resnet-s1 convnext"]
            + ["--epochs", "3", "--cache", str(cache_dir)]
        )
        raise SystemExit(0)
    return exit_info.value.code


def test_distill_trains_one_student_per_teacher(three_run, distilled, capsys):
    assert distilled == 0
    table = pd.read_csv(three_run / "distill" / "resnet-s0" / "distill.csv")
    assert table.teacher.tolist() == ["(no teacher)", "resnet-s1", "convnext"]
    assert table.student_accuracy.between(0, 100).all() and table.student_accuracy.nunique() > 1
    assert table.same_base.tolist() == [False, True, True]  # the extracted cards call all three CNNs
    sat = pd.read_csv(three_run / "sat.csv", index_col=0)
    assert table.sat.iloc[1] == pytest.approx(sat.loc["resnet-s1", "resnet-s0"])
    assert "Distillation: student resnet-s0" in (three_run / "report.html").read_text()  # the report was refreshed
    code, stdout, err = run_cli(capsys, "recommend-teacher", "--run", str(three_run), "--student", "resnet-s0")
    best = table.iloc[1:].sort_values("student_accuracy").teacher.iloc[-1]
    assert code == 0 and "ranked by the measured" in stdout and f"recommended teacher: {best}" in stdout, err


def test_a_student_trained_in_a_worker_equals_one_trained_in_process(distilled, cache_dir):
    from dataclasses import replace

    from archsim.applications.distill import _student_key
    from archsim.data import load_data
    from archsim.hardware import usable_cores
    from archsim.models import ZOO
    from archsim.models.train import train_classifier
    from archsim.tests.independent_sat import ReferenceModel

    if usable_cores() < 2:
        pytest.skip("distill trains in worker processes only on two or more cores")
    store = CacheStore(cache_dir)
    teacher = create_model("zoo:convnext", cache=store, device="cpu")
    recipe = replace(ZOO["resnet-s0"].recipe, augment="affine", epochs=3)
    train, evaluation = load_data("digits", split="train"), load_data("digits", split="eval")
    key = _student_key(ZOO["resnet-s0"], recipe, teacher, train)
    assert distilled == 0 and store.contains("distill", key)  # trained by a worker (three students on two cores)
    recorded = float(store.get("distill", key)["eval_accuracy"])
    # The worker's recorded accuracy is that of the student trained here, in process, with the same recipe and
    # teacher, on every evaluation image as a plain loop finds it, each image as Pillow resizes it with the zoo
    # entry's stated preprocessing.
    entry = ZOO["resnet-s0"]
    state, _ = train_classifier(entry.build, entry.preprocess(), train, recipe, entry.seed, "test", teacher=teacher)
    net = entry.build()
    net.load_state_dict(state)
    p = entry.preprocess()
    student = ReferenceModel(net, p.mean.flatten().tolist(), p.std.flatten().tolist(), p.input_size[1:],
                             p.interpolation)  # fmt: skip
    right = 0
    with torch.no_grad():
        for image, label in zip(evaluation.images.numpy(), evaluation.labels.numpy(), strict=True):
            seen = torch.tensor(student.sees(image)[None], dtype=torch.float32) / 255
            right += int(student(seen).argmax(1).item() == label)
    assert recorded == pytest.approx(100 * right / len(evaluation.labels), abs=1e-4)
    assert 50 < recorded < 100  # a student that learnt, short of perfect: the teacher's mark is in it


@pytest.mark.slow
def test_checkpoints_against_the_final_model(three_run, cache_dir, tmp_path, capsys):
    code, stdout, err = run_cli(
        capsys,
        "checks",
        "--run",
        str(three_run),
        "--checkpoints",
        "zoo:resnet-s0",
        "--epochs",
        "1,10",
        "--cache",
        str(cache_dir),
        "--out",
        str(tmp_path / "chk"),
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "chk" / "checkpoints.csv")
    assert table.epoch.tolist() == [1, 10, 20] and table.model.tolist() == ["resnet-s0@1", "resnet-s0@10", "resnet-s0"]
    assert table.sat_vs_final.iloc[-1] >= np.log(95) and table.sat_vs_final.iloc[0] < table.sat_vs_final.iloc[-1]
    assert table.clean_accuracy.iloc[0] < table.clean_accuracy.iloc[-1]


@pytest.mark.slow
def test_adversarially_trained_models_against_the_run(three_run, cache_dir, tmp_path, capsys):
    """Two models join the run: resnet-adv, and resnet-s2 in place of a second adversarially trained seed (training
    one costs the suite a minute; the check's arithmetic is the same). Every number of both tables from the full
    run's matrix and pairs (to the 6 significant digits the CSVs keep)."""
    before = snapshot(three_run)
    code, stdout, err = run_cli(
        capsys,
        "checks",
        "--run",
        str(three_run),
        "--adversarial",
        "zoo:resnet-adv zoo:resnet-s2",
        "--cache",
        str(cache_dir),
        "--out",
        str(tmp_path / "chk"),
    )
    assert code == 0, err
    assert snapshot(three_run) == before  # the run keeps its three models
    table = pd.read_csv(tmp_path / "chk" / "adversarial.csv")
    assert table.adversarial.tolist() == ["resnet-adv"] * 5 + ["resnet-s2"] * 5
    assert table.model.tolist()[:5] == ["resnet-adv", "resnet-s2", "resnet-s0", "resnet-s1", "convnext"]
    assert table.relation.tolist()[:5] == [
        "itself",
        "adversarially trained",
        "same architecture",
        "same architecture",
        "different architecture",
    ]
    own = table.set_index("model").loc["resnet-adv"].iloc[0]
    assert own.white_box_success < table.white_box_success.iloc[2] - 30  # trained to resist the attack
    full = run_sat(THREE + ["zoo:resnet-adv", "zoo:resnet-s2"], **FAST, cache=cache_dir)
    pairs = full.pairs.set_index(["source", "target"])
    for row in table.itertuples():
        assert row.sat == pytest.approx(full.sat.loc[row.adversarial, row.model], rel=1e-5)
        assert row.sat_low == pytest.approx(pairs.loc[(row.adversarial, row.model), "sat_low"], rel=1e-5)
    summary = pd.read_csv(tmp_path / "chk" / "adversarial_summary.csv").set_index("comparison")
    assert list(summary.index) == [
        "adversarially trained among themselves",
        "adversarially trained vs same architecture",
        "adversarially trained vs different architecture",
        "run: different seeds",
        "run: different architectures",
    ]
    assert summary.pairs.tolist() == [1, 4, 2, 1, 2] and summary.nearest.sum() == 1
    sat = full.sat
    same = [sat.loc[a, b] for a in ("resnet-adv", "resnet-s2") for b in ("resnet-s0", "resnet-s1")]
    expected = {
        "adversarially trained among themselves": [sat.loc["resnet-adv", "resnet-s2"]],
        "adversarially trained vs same architecture": same,
        "adversarially trained vs different architecture": [
            sat.loc[m, "convnext"] for m in ("resnet-adv", "resnet-s2")
        ],
        "run: different seeds": [sat.loc["resnet-s0", "resnet-s1"]],
    }
    for comparison, cells in expected.items():
        assert summary.loc[comparison, "mean_sat"] == pytest.approx(np.mean(cells), rel=1e-5)
        assert summary.loc[comparison, "ln_mean_percent"] == pytest.approx(np.log(np.mean(np.exp(cells))), rel=1e-5)
    among = summary.loc["adversarially trained among themselves"]
    assert among.mean_sat_low == pytest.approx(pairs.loc[("resnet-adv", "resnet-s2"), "sat_low"], rel=1e-5)
    assert among.paper_mean_sat == 3.15 and np.isnan(summary.loc["run: different seeds", "paper_mean_sat"])
    gaps = (summary.mean_sat.iloc[3:] - among.mean_sat).abs()
    assert summary.nearest.idxmax() == gaps.idxmin()
    assert "adversarially trained among themselves: mean SAT" in stdout


def test_the_adversarial_check_refuses_models_it_cannot_place(three_run, cache_dir, tmp_path, capsys):
    before = snapshot(three_run)
    stranger = "timm:resnet10t,pretrained=false,num_classes=10,in_chans=1"
    for spec, message in (
        (stranger, f"--adversarial {stranger} has the architecture of no other model in"),
        (stranger + ",name=resnet-s0", "already has another model named 'resnet-s0'; give --adversarial another name"),
        ("zoo:resnet-nope", "unknown zoo model"),
        ("zoo:resnet-adv zoo:resnet-adv", "two models are named 'resnet-adv'"),
    ):
        code, _, err = run_cli(
            capsys,
            "checks",
            "--run",
            str(three_run),
            "--adversarial",
            spec,
            "--cache",
            str(cache_dir),
            "--out",
            str(tmp_path / "chk"),
        )
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(three_run) == before and not (tmp_path / "chk").exists()


def test_a_teacher_whose_weights_changed_since_the_start_is_refused(three_run, cache_dir, tmp_path):
    from dataclasses import replace

    from archsim.applications.distill import _student_accuracy
    from archsim.data import load_data
    from archsim.errors import ArchsimError
    from archsim.models import ZOO

    recipe = replace(ZOO["resnet-s0"].recipe, augment="affine", epochs=1)
    digits = load_data("digits", split="eval")
    store = CacheStore(tmp_path)
    shutil.copytree(cache_dir / "zoo", tmp_path / "zoo")
    # The key of another teacher stands for the weights the spec named when distill started.
    with pytest.raises(ArchsimError, match="gave other weights than when distill started"):
        _student_accuracy("resnet-s0", recipe, digits, digits, "zoo:resnet-s1", "0" * 64, "resnet-s0", store)
    assert not store.contains("distill", "0" * 64)


def test_compare_attacks_takes_attack_instances(three_run, cache_dir, tmp_path):
    eps = RunFolder(three_run).settings.eps
    by_spec = compare_attacks(three_run, ["fgsm"], out=tmp_path / "spec", cache=cache_dir)
    by_object = compare_attacks(three_run, [FGSM(eps=eps)], out=tmp_path / "object", cache=cache_dir)
    assert list(by_object.matrices) == list(by_spec.matrices)
    for spec in by_spec.matrices:
        pd.testing.assert_frame_equal(by_object.matrices[spec], by_spec.matrices[spec], check_exact=True)
    with pytest.raises(ParameterError, match="the run's is") as error:
        compare_attacks(three_run, [FGSM(eps=eps / 2)], cache=cache_dir)
    assert error.value.parameter == "attacks"
