import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import cohen_kappa_score
from torch import nn

from archsim.measures import cka_matrix, disagreement, error_consistency, linear_cka
from archsim.models import Preprocess, SimModel, create_model
from archsim.models.features import classifier_layer, penultimate_features


def test_disagreement_by_hand():
    predictions = np.array([[0, 1, 2, 3], [0, 1, 2, 0], [1, 0, 2, 0]])
    expected = np.array([[0, 0.25, 0.75], [0.25, 0, 0.5], [0.75, 0.5, 0]])
    assert np.allclose(disagreement(predictions), expected)


def test_error_consistency_is_cohens_kappa_of_correctness():
    rng = np.random.default_rng(0)
    correct = rng.random((4, 300)) < np.array([[0.9], [0.8], [0.6], [0.95]])
    kappa = error_consistency(correct)
    for i in range(4):
        for j in range(4):
            assert np.isclose(kappa[i, j], cohen_kappa_score(correct[i], correct[j]))
    always = np.ones((2, 300), dtype=bool)  # two perfect models: nothing to be consistent about
    assert np.isnan(error_consistency(always)[0, 1])


def hsic_cka(x, y):
    """Reference: CKA from centred linear Gram matrices (Kornblith et al., eq. 3)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * m) / np.sqrt(np.sum(k * k) * np.sum(m * m))


def test_linear_cka_against_the_gram_formula_and_its_invariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 12))
    y = x @ rng.normal(size=(12, 7)) + 0.5 * rng.normal(size=(60, 7))
    assert np.isclose(linear_cka(x, y), hsic_cka(x, y))
    assert np.isclose(linear_cka(x, x), 1.0)
    rotation, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert np.isclose(linear_cka(x, 3.0 * x @ rotation + 2.0), 1.0)
    independent = rng.normal(size=(60, 7))
    assert linear_cka(x, independent) < linear_cka(x, y)
    matrix = cka_matrix([x, y, independent])
    assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1.0)
    assert np.isclose(matrix[0, 1], linear_cka(x, y)) and np.isclose(matrix[1, 2], linear_cka(y, independent))


def test_cka_in_row_chunks_and_with_bootstrap_weights(tmp_path, monkeypatch):
    """Memory maps read a few rows at a time give the Gram formula's CKA; a bootstrap draw's counts
    as weights give the CKA of the drawn rows (zero-count rows skipped), without building them."""
    from archsim.measures import cka

    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 3, 4)) + 5.0  # features of any shape are rows flattened; a large mean tests the centring
    y = x.reshape(50, -1)[:, :6] @ rng.normal(size=(6, 9)) + rng.normal(size=(50, 9))
    z = rng.normal(size=(50, 5))
    maps = []
    for name, array in (("x", x), ("y", y), ("z", z)):
        np.save(tmp_path / f"{name}.npy", array.astype(np.float32))
        maps.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    monkeypatch.setattr(cka, "CHUNK_BYTES", 8 * 12 * 7)  # 7 rows of the widest: 8 chunks, the last short
    assert len(list(cka._blocks(maps[0], maps[2]))) == 8
    flat = [m.reshape(50, -1).astype(np.float64) for m in maps]
    matrix = cka_matrix(maps)
    for i in range(3):
        for j in range(3):
            assert np.isclose(matrix[i, j], hsic_cka(flat[i], flat[j]), rtol=1e-10)
    index = rng.integers(0, 50, size=130)
    counts = np.bincount(index, minlength=50)
    assert (counts == 0).any()  # some rows are left out of the draw
    for a, b in ((0, 1), (1, 2)):
        drawn = hsic_cka(flat[a][index], flat[b][index])
        assert np.isclose(linear_cka(maps[a], maps[b], weights=counts), drawn, rtol=1e-10)
        assert np.isclose(linear_cka(flat[a][index], flat[b][index]), drawn, rtol=1e-10)
    assert np.isclose(linear_cka(flat[0].tolist(), flat[1]), hsic_cka(flat[0], flat[1]), rtol=1e-10)  # any array-like
    with pytest.raises(ValueError, match="share their rows"):
        cka_matrix([x, z[:40]])
    with pytest.raises(ValueError, match="non-negative"):
        linear_cka(x, y, weights=-counts)


def test_penultimate_features_are_the_classifier_input():
    model = create_model("timm:resnet18,pretrained=false,num_classes=10")
    assert classifier_layer(model) is model.net.fc
    images = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    features = penultimate_features(model, images, batch_size=2)
    assert features.shape == (5, 512)
    with torch.inference_mode():
        logits = model(images.float() / 255)
    assert torch.allclose(model.net.fc(features), logits, atol=1e-4)


def test_classifier_found_without_names():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 6), nn.ReLU(), nn.Linear(6, 3)
    )
    model = SimModel(net, Preprocess((1, 16, 16), (0.5,), (0.5,)), "seq", "test:seq")
    assert classifier_layer(model) is net[5]


def test_ensemble_err_by_hand():
    from archsim.measures.comparison import ensemble_err

    labels = np.array([0, 1, 2, 0])
    eye = np.eye(3)
    a = eye[[0, 1, 1, 1]] * 2.0  # wrong on images 2 and 3 -> error 0.5
    b = eye[[0, 2, 2, 0]] * 1.0  # wrong on image 1 -> error 0.25
    # averaged logits: image 1 -> class 1 (2 vs 1), image 2 -> class 1 (2 vs 1), image 3 -> class 1 (2 vs 1): error 0.5
    err = ensemble_err(np.stack([a, b]), labels)
    assert np.isclose(err[0, 1], 1 - 0.5 / 0.375) and np.isnan(err[0, 0])


def test_region_planes_and_agreement():
    from archsim.measures.regions import (
        MARGIN,
        plane_points,
        plane_triplets,
        region_agreement,
    )

    labels = np.repeat(np.arange(5), 4)
    triplets = plane_triplets(labels, 30, seed=1)
    assert all(len(set(labels[t])) == 3 for t in triplets)
    assert np.array_equal(triplets, plane_triplets(labels, 30, seed=1))
    corners = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.25)])
    points = plane_points(corners, resolution=5)
    step = (1 + 2 * MARGIN) / 4
    assert points.shape == (25, 1, 2, 2)
    # grid point (1, 2): (a, b) = (-MARGIN + step, -MARGIN + 2 step) = (0.125, 0.5) on x1 = 0, x2 = 0.5, x3 = 0.25
    a, b = -MARGIN + step, -MARGIN + 2 * step
    assert (a, b) == (0.125, 0.5)
    assert torch.isclose(points[1 * 5 + 2, 0, 0, 0], torch.tensor(a * 0.5 + b * 0.25))
    agreement = region_agreement([np.array([[0, 1, 1, 2]]), np.array([[0, 1, 2, 2]])])
    assert agreement.shape == (2, 2, 1) and agreement[0, 1, 0] == 0.75 and agreement[0, 0, 0] == 1.0


def test_boundary_distance_on_a_linear_model():
    from archsim.measures.boundary import (
        boundary_distance,
        boundary_gap,
        sign_directions,
    )

    # Two-class linear model on one pixel: class 1 iff pixel > 0.5 (logits [0.5 - p, p - 0.5] scaled).
    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[-10.0], [10.0]]))
        net[1].bias.copy_(torch.tensor([5.0, -5.0]))
    model = SimModel(net, Preprocess(None, [0.0], [1.0]), "lin", "test:lin")
    images = torch.tensor([[[[51]]], [[[102]]], [[[200]]]], dtype=torch.uint8)  # 0.2, 0.4 (class 0), 0.78 (class 1)
    labels = torch.tensor([0, 0, 1])
    directions = sign_directions(model, images, labels)
    assert directions.flatten().tolist() == [1.0, 1.0, -1.0]
    distance = boundary_distance(model, images, labels, directions, max_distance=0.4, n_points=40)
    # boundary at 0.5: 0.3 from 0.2, 0.1 from 0.4, 0.284 from 0.784 (first grid point past it, step 0.01)
    assert np.allclose(distance, [0.31, 0.11, 0.29], atol=0.011)
    far = boundary_distance(model, images, labels, directions, max_distance=0.05, n_points=5)
    assert np.allclose(far, 0.05 * 1.2)
    gap = boundary_gap(np.stack([np.stack([distance, distance + 0.1])] * 2), np.ones((2, 2, 3), bool))
    assert np.allclose(gap[0, 1], 0.1) and np.allclose(gap[0, 0], 0)


def test_boundary_gap_by_its_definition():
    """The gap of a and b: |d_a - d_b| along a's directions and along b's, averaged; NaN where invalid."""
    from archsim.measures.boundary import boundary_gap

    rng = np.random.default_rng(4)
    distances = rng.random((4, 4, 6))
    distances[1, 2, 3] = np.nan  # a target that never crossed within reach on one image
    valid = rng.random((4, 4, 6)) < 0.8
    gap = boundary_gap(distances, valid)
    for a in range(4):
        for b in range(4):
            along_a = np.abs(distances[a, a] - distances[a, b])
            along_b = np.abs(distances[b, a] - distances[b, b])
            assert np.array_equal(gap[a, b], np.where(valid[a, b], (along_a + along_b) / 2, np.nan), equal_nan=True)
    assert np.isnan(gap[1, 2, 3]) and np.isnan(gap[2, 1, 3])


def quadrant_set(path, n_images: int, n_classes: int, side: int, seed: int) -> np.ndarray:
    """An npz set of noise (0-119) where class k (at most 4) brightens quadrant k by 40; returns the quadrant masks."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) % n_classes
    half = side // 2
    masks = np.zeros((n_classes, 3, side, side), dtype=np.float32)
    for k in range(n_classes):
        masks[k, :, (k // 2) * half : (k // 2 + 1) * half, (k % 2) * half : (k % 2 + 1) * half] = 1
    images = (rng.integers(0, 120, (n_images, 3, side, side)) + 40 * masks[labels]).astype(np.uint8)
    np.savez(path, images=images, labels=labels)
    return masks


def saved_run(tmp_path, nets: dict, side: int, steps: int, batch_size: int):
    """``file:`` specs of ``nets`` (reading pixels unnormalised), their store and their run on
    ``tmp_path/set.npz``, written to ``tmp_path/run``."""
    from archsim.cache import CacheStore
    from archsim.runs import RunFolder, run_sat

    specs = []
    for name, net in nets.items():
        torch.save(net, tmp_path / f"{name}.pt")
        specs.append(f"file:{tmp_path / f'{name}.pt'},input_size=3:{side}:{side},mean=0:0:0,std=1:1:1,name={name}")
    store = CacheStore(tmp_path / "cache")
    run = run_sat(
        specs,
        data=f"npz:{tmp_path / 'set.npz'}",
        steps=steps,
        n_boot=0,
        device="cpu",
        batch_size=batch_size,
        cache=store,
    )
    RunFolder(tmp_path / "run").write(run)
    return specs, store, run


def test_measures_read_a_set_in_the_cache_as_one_in_memory(tmp_path):
    """A set larger than memory stays in the cache: features, regions and boundary distances
    read it a batch (or a triplet) at a time and must give what the set held in memory gives."""
    from archsim.cache import CacheStore
    from archsim.data import load_data
    from archsim.data.imageset import StoredImages
    from archsim.measures.boundary import (
        boundary_distance,
        boundary_distances,
        sign_directions,
    )
    from archsim.measures.regions import plane_triplets, region_labels

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "set.npz", images=rng.integers(0, 256, (23, 3, 12, 12), dtype=np.uint8), labels=np.arange(23) % 5
    )
    memory = load_data(f"npz:{tmp_path / 'set.npz'}")
    stored = load_data(f"npz:{tmp_path / 'set.npz'}", store=CacheStore(tmp_path / "cache"))
    assert isinstance(stored.images, StoredImages) and not isinstance(memory.images, StoredImages)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 5))
        models.append(SimModel(net, Preprocess((3, 12, 12), [0.5] * 3, [0.25] * 3), f"net{seed}", f"test:net{seed}"))
    a, b, c = models
    assert torch.equal(
        penultimate_features(a, stored.images, batch_size=5), penultimate_features(a, memory.images, batch_size=5)
    )
    triplets = plane_triplets(memory.labels.numpy(), 6, seed=0)
    assert np.array_equal(
        region_labels(b, stored.images, triplets, resolution=4), region_labels(b, memory.images, triplets, resolution=4)
    )
    streamed = boundary_distances(
        a, [b, c], stored.images, memory.labels, 0.2, 8, source_batch=5, target_batches=[3, 23]
    )
    directions = sign_directions(a, memory.images, memory.labels, batch_size=5)
    whole = [
        boundary_distance(target, memory.images, memory.labels, directions, 0.2, 8, batch_size=5) for target in (b, c)
    ]
    assert streamed.shape == (2, 23) and np.array_equal(streamed, np.stack(whole))
    assert ((streamed > 0) & (streamed <= 0.2)).any()  # some labels flip inside the reach: the check is not vacuous


def test_boundary_of_a_run_on_a_set_in_the_cache(tmp_path, monkeypatch):
    """``archsim measures`` reads an npz run's set from the cache; each source's single streamed pass
    fills every target still missing, and a lost entry is made again to the same matrix."""
    from archsim.api import compute_measures
    from archsim.cache import CacheStore
    from archsim.data import load_data
    from archsim.measures.boundary import (
        boundary_distance,
        boundary_gap,
        sign_directions,
    )

    # Three noisy linear readers of the quadrants classify every image with margins that sign steps
    # within the boundary measure's reach can overcome.
    masks = quadrant_set(tmp_path / "set.npz", n_images=24, n_classes=4, side=12, seed=1)
    readers = {}
    for seed in range(3):
        torch.manual_seed(seed)
        reader = readers[f"lin{seed}"] = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4))
        with torch.no_grad():
            reader[1].weight.copy_(0.1 * torch.from_numpy(masks.reshape(4, -1)) + 0.05 * torch.randn(4, 3 * 12 * 12))
            reader[1].bias.zero_()
    specs, store, run = saved_run(tmp_path, readers, side=12, steps=2, batch_size=5)
    # every reader is fooled alike
    with pytest.warns(UserWarning, match="sat and boundary: 3 model pairs .* constant in one"):
        first = compute_measures(tmp_path / "run", ["boundary"], device="cpu", batch_size=5, cache=store)["boundary"]

    memory = load_data(f"npz:{tmp_path / 'set.npz'}")
    models = [create_model(spec, cache=store) for spec in specs]
    eps = run.config["settings"]["attack"]["eps"]
    distances = np.stack(
        [
            np.stack(
                [
                    boundary_distance(
                        t, memory.images, memory.labels, sign_directions(s, memory.images, memory.labels), 4 * eps
                    )
                    for t in models
                ]
            )
            for s in models
        ]
    )
    correct = run.transfer.clean_correct
    expected = np.nanmean(boundary_gap(distances, correct[:, None] & correct[None, :]), axis=-1)
    assert run.transfer.clean_correct.all() and np.allclose(first.to_numpy(), expected)
    # boundaries inside the reach, not alike
    assert ((distances > 0) & (distances <= 4 * eps)).mean() > 0.2 and expected[0, 1] > 0

    entries = [entry for entry in store.entries() if entry["kind"] == "boundary"]
    assert len(entries) == 9
    store.remove("boundary", entries[4]["key"])
    again = CacheStore(tmp_path / "cache")
    with pytest.warns(UserWarning, match="constant in one"):
        second = compute_measures(tmp_path / "run", ["boundary"], device="cpu", batch_size=5, cache=again)["boundary"]
    assert again.misses == 1 and np.array_equal(first.to_numpy(), second.to_numpy(), equal_nan=True)

    # One model resident at a time (a zoo larger than memory): each target in its own streamed pass, the same matrix.
    from archsim.measures import boundary

    groups = []
    streamed = boundary.boundary_distances
    monkeypatch.setattr(boundary, "boundary_distances", lambda s, t, *a: groups.append(len(t)) or streamed(s, t, *a))
    for entry in [e for e in again.entries() if e["kind"] == "boundary"]:
        again.remove("boundary", entry["key"])
    with pytest.warns(UserWarning, match="constant in one"):
        apart = compute_measures(
            tmp_path / "run", ["boundary"], device="cpu", batch_size=5, cache=again, max_resident=1
        )
    assert groups == [1] * 9 and np.array_equal(first.to_numpy(), apart["boundary"].to_numpy(), equal_nan=True)
    groups.clear()
    for entry in [e for e in again.entries() if e["kind"] == "boundary"]:
        again.remove("boundary", entry["key"])
    with pytest.warns(UserWarning, match="constant in one"):
        compute_measures(tmp_path / "run", ["boundary"], device="cpu", batch_size=5, cache=again)
    assert groups == [3, 3, 3]  # all resident: one pass per source


def test_cka_of_a_run_streams_its_features_into_the_cache(tmp_path, monkeypatch):
    """``archsim measures --measures cka``: each model's features are written to the cache a batch at a time
    (their width taken from the first batch) and read back mapped, a few rows at a time."""
    from archsim.api import compute_measures
    from archsim.cache import CacheStore
    from archsim.data import load_data
    from archsim.measures import cka
    from archsim.measures.on_run import cka as on_run

    # Each net's first 3 hidden units read the quadrants (so every image is classified right and SAT is
    # defined), its other units are random (so the nets' features differ).
    masks = quadrant_set(tmp_path / "set.npz", n_images=21, n_classes=3, side=8, seed=3)
    nets = {}
    for seed, width in enumerate((5, 8, 11)):  # widths differ: the cross-covariances are not square
        torch.manual_seed(seed)
        net = nets[f"mlp{seed}"] = nn.Sequential(nn.Flatten(), nn.Linear(192, width), nn.ReLU(), nn.Linear(width, 3))
        with torch.no_grad():
            net[1].weight.copy_(
                torch.cat([0.1 * torch.from_numpy(masks.reshape(3, -1)), 0.5 * torch.randn(width - 3, 192)])
            )
            net[1].bias.zero_()
            net[3].weight.copy_(torch.eye(3, width))
            net[3].bias.zero_()
    specs, store, run = saved_run(tmp_path, nets, side=8, steps=1, batch_size=4)
    monkeypatch.setattr(cka, "CHUNK_BYTES", 8 * 11 * 4)  # 4 rows at a time
    given = []
    monkeypatch.setattr(on_run, "cka_matrix", lambda features: given.extend(features) or cka.cka_matrix(features))
    with pytest.warns(UserWarning, match="sat and cka: 3 model pairs .* constant in one"):  # every net is fooled alike
        matrix = compute_measures(tmp_path / "run", ["cka"], device="cpu", batch_size=4, cache=store)["cka"]

    memory = load_data(f"npz:{tmp_path / 'set.npz'}")
    features = [penultimate_features(create_model(spec, cache=store), memory.images).double().numpy() for spec in specs]
    assert [f.shape for f in features] == [(21, 5), (21, 8), (21, 11)]
    expected = np.array([[hsic_cka(a, b) for b in features] for a in features])
    assert run.transfer.clean_correct.all()
    assert np.allclose(matrix.to_numpy(), expected, rtol=1e-6) and expected[0, 1] < 0.99
    assert len(given) == 3 and all(isinstance(f, np.memmap) for f in given)  # mapped from the cache, not loaded
    stored = [entry for entry in store.entries() if entry["kind"] == "feat"]
    assert sorted(store.open("feat", entry["key"]).shape("features") for entry in stored) == [
        (21, 5),
        (21, 8),
        (21, 11),
    ]
    comparison = pd.read_csv(tmp_path / "run" / "measures" / "measure_comparison.csv").set_index("measure")
    assert comparison.loc["cka", "spread_sd"] > 0

    again = CacheStore(tmp_path / "cache")
    with pytest.warns(UserWarning, match="constant in one"):
        rerun = compute_measures(tmp_path / "run", ["cka"], device="cpu", batch_size=4, cache=again)["cka"]
    assert again.misses == 0 and np.array_equal(rerun.to_numpy(), matrix.to_numpy())


def test_the_measures_comparison_table_by_hand():
    """Three models, three pairs: items at the budget, the spread of the resamples (the callbacks record what they
    were given), the spread across pairs, and the rank and linear correlations, each computed here."""
    from archsim.measures.comparison import compare_measures

    def matrix(upper):
        m = np.zeros((3, 3))
        m[np.triu_indices(3, 1)] = upper
        return m + m.T

    given = {"sat": [], "cka": [], "boundary": []}

    def recording(name, pool):
        def resample(index):
            assert index.min() >= 0 and index.max() < pool
            given[name].append(float(index.sum()))
            return given[name][-1]

        return resample

    pools = {"sat": 10, "cka": 4, "boundary": 7}
    table = compare_measures(
        {"sat": matrix([1, 2, 3]), "cka": matrix([3, 1, 2]), "boundary": matrix([5, 5, 5])},
        {name: recording(name, pool) for name, pool in pools.items()},
        pools,
        {"sat": 50.0, "cka": 3.0, "boundary": 1000.0},
        matrix([0.1, 0.3, 0.2]),
        budget=100.0,
        n_resamples=25,
        seed=4,
    ).set_index("measure")
    assert table.items_at_budget.to_dict() == {"sat": 2, "cka": 33, "boundary": 1}  # 100/50, 100/3 rounded, at least 1
    assert {name: len(values) for name, values in given.items()} == {"sat": 25, "cka": 25, "boundary": 25}
    for name in pools:
        assert table.spread_sd[name] == pytest.approx(np.std(given[name]))
    assert table.across_pairs_sd["sat"] == pytest.approx(np.sqrt(2 / 3))
    assert table.noise_to_signal["cka"] == pytest.approx(np.std(given["cka"]) / np.sqrt(2 / 3))
    assert np.isnan(table.noise_to_signal["boundary"])  # the same value for every pair: no signal to divide by
    assert table.spearman_vs_sat["sat"] == pytest.approx(1.0) and table.spearman_vs_sat["cka"] == pytest.approx(-0.5)
    assert table.pearson_vs_err["sat"] == pytest.approx(np.corrcoef([1, 2, 3], [0.1, 0.3, 0.2])[0, 1])
    assert table.pearson_vs_err["cka"] == pytest.approx(np.corrcoef([3, 1, 2], [0.1, 0.3, 0.2])[0, 1])
    assert np.isnan(table.spearman_vs_err["boundary"]) and table.passes_per_item["cka"] == 3.0


def test_correlate_and_err_at_their_edges():
    """Pairs unknown in either matrix are left out; a side spanning exactly 1 is not constant; the four columns
    whatever the case; every item of a pool can be drawn; the defaults; ERR of two flawless models is NaN without
    dividing 0 by 0."""
    import inspect
    import warnings

    from scipy import stats

    from archsim.measures.comparison import compare_measures, correlate, ensemble_err

    x, y = np.array([1.0, 2.0, 1.5, np.nan, 7.0]), np.array([0.3, 0.9, 0.1, 0.5, np.nan])
    result = correlate(x, y)
    assert list(result) == ["spearman", "spearman_p", "pearson", "pearson_p"]
    expected = stats.pearsonr(x[:3], y[:3])
    assert (result["pearson"], result["pearson_p"]) == pytest.approx((expected.statistic, expected.pvalue))
    assert result["spearman_p"] == pytest.approx(stats.spearmanr(x[:3], y[:3]).pvalue)
    assert np.ptp(x[:3]) == 1 and np.ptp(y[:3]) != 1
    assert correlate(y, x)["pearson"] == pytest.approx(expected.statistic)  # either side spanning 1
    undefined = correlate(np.ones(4), np.arange(4.0))
    assert list(undefined) == list(result) and np.isnan(list(undefined.values())).all()

    drawn = []
    compare_measures(
        {"sat": np.array([[0, 1.0, 2], [1, 0, 3], [2, 3, 0]])},
        {"sat": lambda index: drawn.extend(index) or 0.0},
        {"sat": 2},
        {"sat": 1.0},
        np.zeros((3, 3)),
        budget=3.0,
        n_resamples=20,
    )
    assert set(drawn) == {0, 1}
    defaults = inspect.signature(compare_measures).parameters
    assert (defaults["n_resamples"].default, defaults["seed"].default) == (200, 0)

    labels = np.array([0, 1, 2])
    perfect = np.eye(3)[None].repeat(2, 0) * 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(ensemble_err(perfect, labels)).all()


def test_every_measure_archsim_names_has_its_items():
    from archsim.applications.measures import all_measures
    from archsim.measures import MEASURES
    from archsim.measures.on_run import BUILTIN

    assert list(BUILTIN) == list(MEASURES) and set(MEASURES) <= set(all_measures())
    assert all(m.name == name and m.description == MEASURES[name] for name, m in BUILTIN.items())
