"""Every execution path of ``run_sat`` gives the SAT an independent reference computes from the definition.

The reference (:mod:`archsim.tests.independent_sat`) shares no code with the pipeline: timm's evaluation transform,
Pillow, torchattacks' PGD, plain forward passes and numpy. Without a random start the attack is deterministic, so
the adversarial images, the counts behind every cell and the matrices must agree exactly (the matrices to the
decimals a run keeps). Two zoos: three digits models of two input sizes (16 and 32 px, so that sets are resized
both ways), and two timm models of the paper's families at 224 and 240 px on photos with their own views. The Ray
engine is compared in ``archsim/engines/tests/test_ray.py``.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from archsim import run_sat
from archsim.cache import CacheStore
from archsim.data import load_data
from archsim.models import create_model
from archsim.runs.folder import DECIMALS
from archsim.tests.independent_sat import ReferenceModel, ReferenceSat, reference_sat, timm_reference
from archsim.tests.test_resilience import entries, kill_when
from archsim.tests.test_views import photos

DIGITS_MODELS = ["zoo:resnet-s0", "zoo:resnet-s1", "zoo:convnext"]
DIGITS_ATTACK = dict(eps=26 / 255, steps=5, rel_step=0.3)
PHOTO_ATTACK = dict(eps=8 / 255, steps=2, rel_step=0.4)
KEPT = 0.5 * 10.0 ** -DECIMALS["sat"]
"""Half the last decimal a run keeps: a run's matrices are rounded to it."""


def digits_reference(cache_dir: Path, folder: Path) -> tuple[str, ReferenceSat]:
    """An npz file of 48 digits and the reference SAT of :data:`DIGITS_MODELS` on it (the networks trained in the
    session's cache, with the preprocessing their zoo entries state)."""
    digits = load_data("digits")
    images, labels = digits.images[:48].numpy(), digits.labels[:48].numpy()
    np.savez(folder / "digits.npz", images=images, labels=labels)
    references = zoo_references(CacheStore(cache_dir))
    return f"npz:{folder / 'digits.npz'}", reference_sat(references, images, labels, **DIGITS_ATTACK)


def zoo_references(store: CacheStore) -> list[ReferenceModel]:
    """The networks of :data:`DIGITS_MODELS` trained in ``store``, each with the preprocessing its zoo entry states."""
    models = [create_model(spec, cache=store) for spec in DIGITS_MODELS]
    return [
        ReferenceModel(
            m.net,
            m.preprocess.mean.flatten().tolist(),
            m.preprocess.std.flatten().tolist(),
            m.preprocess.input_size[1:],
            m.preprocess.interpolation,
        )
        for m in models
    ]


def fresh_cache(cache_dir: Path, folder: Path) -> CacheStore:
    """A cache with the trained zoo weights and nothing else: every set and prediction is computed anew."""
    shutil.copytree(cache_dir / "zoo", folder / "zoo")
    return CacheStore(folder)


def assert_matches(run, reference: ReferenceSat, store: CacheStore) -> None:
    """The run's adversarial sets, clean predictions, counts and matrices are the reference's."""
    transfer = run.transfer
    for key, expected in zip(transfer.adv_keys, reference.adversarial, strict=True):
        stored = np.concatenate(list(store.open("adv", key).batches("images", 256)))
        assert np.array_equal(stored, expected), f"{(stored != expected).sum()} pixels differ"
    assert np.array_equal(transfer.clean_correct, reference.clean_correct)
    both = reference.clean_correct[:, None] & reference.clean_correct[None]
    assert np.array_equal(transfer.adv_wrong & both, reference.adv_wrong & both)
    pairs = run.pairs.set_index(["source", "target"])
    names = list(run.sat.index)
    for s, source in enumerate(names):
        for t, target in enumerate(names):
            row = pairs.loc[(source, target)]
            assert row.n_both_correct == reference.both[s, t]
            if reference.both[s, t]:
                assert round(row.fool_rate_source_to_target * reference.both[s, t] / 100) == reference.fooled[s, t]
    np.testing.assert_allclose(run.sat.to_numpy(), reference.sat, rtol=0, atol=KEPT)
    np.testing.assert_allclose(run.one_sided.to_numpy(), reference.one_sided, rtol=0, atol=KEPT)


@pytest.fixture(scope="module")
def digits(cache_dir, tmp_path_factory):
    return digits_reference(cache_dir, tmp_path_factory.mktemp("digits"))


def test_the_reference_is_no_trivial_matrix(digits):
    """Cells between the diagonal and no transfer at all, from dozens of images each: a path that lost or swapped
    images, targets or sets would change them."""
    _, reference = digits
    assert reference.both.min() >= 40
    off = reference.fooled[~np.eye(3, dtype=bool)]
    assert off.max() > 0 and (reference.fooled.diagonal() == reference.both.diagonal()).all()
    assert len(set(reference.sat[~np.eye(3, dtype=bool)].round(6))) >= 2


@pytest.mark.parametrize(
    "batch_size, max_resident",
    [(7, "auto"), ("auto", 1)],
    ids=["fixed-batch-all-resident", "auto-batch-one-resident"],
)
def test_local_runs_give_the_reference_sat(digits, cache_dir, tmp_path, batch_size, max_resident):
    data, reference = digits
    store = fresh_cache(cache_dir, tmp_path / "cache")
    settings = dict(data=data, **DIGITS_ATTACK, random_start=False, n_boot=0, cache=store)
    run = run_sat(DIGITS_MODELS, batch_size=batch_size, max_resident=max_resident, **settings)
    assert run.cache_misses > 0
    assert_matches(run, reference, store)
    # Streamed back from the cache: every set and prediction is read, none computed.
    again = run_sat(DIGITS_MODELS, batch_size=batch_size, max_resident=max_resident, **settings)
    assert again.cache_misses == 0 and again.transfer.cost["stage2_images_evaluated"] == 0
    assert_matches(again, reference, store)


def test_alphas_and_identical_mistakes_of_a_run_are_the_definition_on_the_reference_sets(digits, cache_dir, tmp_path):
    """alpha_1, alpha_2 and the combined score of every ordered pair, recomputed from the reference's adversarial
    images with plain forward passes and the formulas in numpy (docs/guide/knowledge.md): deviations of the logits on
    the images both models classify right, alpha_1 the mean of |D_st| / |D_tt|, alpha_2 the Frobenius norm of the mean
    outer product of the unit deviations D_ss and D_st, the combined score that mean weighted by each image's
    alpha_1."""
    from archsim.applications.checks import identical_misclassifications
    from archsim.knowledge.on_run import alpha_matrices

    data, reference = digits
    store = fresh_cache(cache_dir, tmp_path / "cache")
    run = run_sat(
        DIGITS_MODELS, data=data, **DIGITS_ATTACK, random_start=False, n_boot=0, cache=store, out=tmp_path / "run"
    )
    result = alpha_matrices(tmp_path / "run", n_boot=0, cache=store)

    nets = zoo_references(store)
    source = np.load(data.removeprefix("npz:"))
    source_images, labels = source["images"], source["labels"]
    with torch.no_grad():
        logits = lambda net, x: net(torch.from_numpy(x).float() / 255).double().numpy()  # noqa: E731
        clean = [logits(net, np.stack([net.sees(item) for item in source_images])) for net in nets]
        adv = [[logits(net, images) for net in nets] for images in reference.adversarial]  # adv[s][t]
    unit = lambda d: d / np.linalg.norm(d, axis=1, keepdims=True)  # noqa: E731
    checked = 0
    for s in range(3):
        for t in range(3):
            both = reference.clean_correct[s] & reference.clean_correct[t]
            d_ss, d_st, d_tt = (adv[s][s] - clean[s])[both], (adv[s][t] - clean[t])[both], (adv[t][t] - clean[t])[both]
            per_image = np.linalg.norm(d_st, axis=1) / np.linalg.norm(d_tt, axis=1)
            outer = np.einsum("ia,ib->iab", unit(d_ss), unit(d_st))
            expected = {
                "alpha_1": per_image.mean(),
                "alpha_2": np.linalg.norm(outer.mean(0)),
                "alpha_combined": np.linalg.norm((per_image[:, None, None] * outer).mean(0)),
            }
            for name, value in expected.items():
                assert result[name].iloc[s, t] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, s, t)
            checked += s != t
    assert checked == 6 and result["alpha_2"].to_numpy().std() > 0.01  # pairs that differ, not one value repeated

    # Identical misclassifications: on X_ab, the attacked target gives the very wrong label the attacked source gives.
    identical = identical_misclassifications(run.transfer, run.sat).set_index(["a", "b"])
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        both = reference.clean_correct[a] & reference.clean_correct[b]
        count = sum(
            int(
                (
                    (reference.adv_pred[s, t] == reference.adv_pred[s, s]) & (reference.adv_pred[s, s] != labels) & both
                ).sum()
            )
            for s, t in [(a, b), (b, a)]
        )
        row = identical.loc[(DIGITS_MODELS[a].removeprefix("zoo:"), DIGITS_MODELS[b].removeprefix("zoo:"))]
        assert row.identical == count and row.identical_rate == pytest.approx(100 * count / (2 * both.sum()))
    assert identical.identical.max() > 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="polls the cache while a process runs")
def test_a_killed_and_resumed_run_gives_the_reference_sat(digits, cache_dir, tmp_path):
    import subprocess
    import sys

    data, reference = digits
    store = fresh_cache(cache_dir, tmp_path / "cache")
    command = [
        sys.executable, "-m", "archsim.cli", "run", "--models", " ".join(DIGITS_MODELS), "--data", data,
        "--eps", repr(DIGITS_ATTACK["eps"]), "--steps", "5", "--rel-step", "0.3", "--no-random-start",
        "--n-boot", "0", "--cache", str(store.root), "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert kill_when(process, lambda: entries(store.root, "adv") >= 1, sig=signal.SIGKILL), "the run ended first"
    run = run_sat(DIGITS_MODELS, data=data, **DIGITS_ATTACK, random_start=False, n_boot=0, cache=store)
    # The set the killed run finished is read, not made again.
    assert run.cache_hits > 0 and (run.timings.attack_s == 0).sum() >= 1
    assert_matches(run, reference, store)


@pytest.fixture(scope="module")
def photo_pair(tmp_path_factory):
    """Two timm models with random weights and 2-class heads, at 224 px (ResNet-18) and 240 px (CrossViT-Ti), saved
    as checkpoints; each head's bias set so that it calls about half the photos each class (a random head calls them
    all one class, and no image would be right for both models)."""
    folder = tmp_path_factory.mktemp("photos")
    files = photos(folder / "set", 16)
    labels = np.array([int(file.parent.name.removeprefix("class")) for file in files])
    specs, references = [], []
    for seed, architecture in enumerate(["resnet18", "crossvit_tiny_240"]):
        torch.manual_seed(seed)
        net = timm.create_model(architecture, pretrained=False, num_classes=2)
        probe = timm_reference(net)
        with torch.no_grad():
            logits = probe(torch.from_numpy(np.stack([probe.sees(file) for file in files])).float() / 255)
            shift = (logits[:, 1] - logits[:, 0]).median()
            for module in net.modules():
                if isinstance(module, torch.nn.Linear) and module.out_features == 2:
                    module.bias[1] -= shift
        torch.save(net.state_dict(), folder / f"{architecture}.pt")
        specs.append(f"timm:{architecture},checkpoint={folder / f'{architecture}.pt'},num_classes=2")
        references.append(timm_reference(net))
    reference = reference_sat(references, files, labels, **PHOTO_ATTACK)
    return specs, f"imagefolder:{folder / 'set'}", reference


@pytest.mark.slow
@pytest.mark.parametrize(
    "batch_size, max_resident",
    [(4, "auto"), ("auto", 1)],
    ids=["fixed-batch-all-resident", "auto-batch-one-resident"],
)
def test_paper_families_at_224_and_240_px_give_the_reference_sat(photo_pair, tmp_path, batch_size, max_resident):
    specs, data, reference = photo_pair
    assert reference.both[0, 1] >= 3 and 0 < reference.fooled[0, 1] + reference.fooled[1, 0] < 2 * reference.both[0, 1]
    store = CacheStore(tmp_path / "cache")
    run = run_sat(
        specs, data=data, **PHOTO_ATTACK, random_start=False, n_boot=0, cache=store,
        batch_size=batch_size, max_resident=max_resident,
    )  # fmt: skip
    assert [store.open("adv", key).shape("images") for key in run.transfer.adv_keys] == [
        (16, 3, 224, 224),
        (16, 3, 240, 240),
    ]
    assert_matches(run, reference, store)
