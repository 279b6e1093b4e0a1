"""Evaluation at scale: each adversarial set read once per group of resident targets, no forward pass
whose result no output uses, and a check of every model before any attack."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from archsim.api import run_sat
from archsim.cache import CacheStore
from archsim.errors import ArchsimError
from archsim.models import create_model
from archsim.transfer import predict

SIDE = 224


class QuadrantReader(nn.Module):
    """Reads which quadrant of a 224-px image is brightest, with seeded noise in its weights: readers
    agree on most images but not all, so the images both classify right differ from pair to pair."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.pool = nn.AvgPool2d(SIDE // 4)
        self.head = nn.Linear(3 * 4 * 4, 4)
        quadrant = torch.zeros(4, 3, 4, 4)
        for k in range(4):
            quadrant[k, :, (k // 2) * 2 : (k // 2 + 1) * 2, (k % 2) * 2 : (k % 2 + 1) * 2] = 1
        with torch.no_grad():
            self.head.weight.copy_(8 * quadrant.reshape(4, -1) + 1.5 * torch.randn(4, 48, generator=generator))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x).flatten(1))


class Broken(nn.Module):
    """A network that cannot run: its forward pass raises."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("deliberately broken")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Four readers saved as ``file:`` models and a 224-px npz set of 24 images, 4 classes."""
    folder = tmp_path_factory.mktemp("scale")
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 4
    images = rng.integers(0, 140, (24, 3, SIDE, SIDE)).astype(np.int64)
    half = SIDE // 2
    for n, k in enumerate(labels):
        images[n, :, (k // 2) * half : (k // 2 + 1) * half, (k % 2) * half : (k % 2 + 1) * half] += 12
    np.savez(folder / "set.npz", images=images.astype(np.uint8), labels=labels)
    specs = []
    for seed in range(4):
        torch.save(QuadrantReader(seed), folder / f"r{seed}.pt")
        specs.append(f"file:{folder / f'r{seed}.pt'},input_size=3:{SIDE}:{SIDE},mean=0:0:0,std=1:1:1,name=r{seed}")
    torch.save(Broken(), folder / "broken.pt")
    broken = f"file:{folder / 'broken.pt'},input_size=3:{SIDE}:{SIDE},name=broken"
    return folder, specs, broken


def _run(folder, specs, store, **options):
    return run_sat(
        specs, data=f"npz:{folder / 'set.npz'}", steps=2, n_boot=0, device="cpu", batch_size=5, cache=store, **options
    )


def test_each_set_is_read_once_and_only_needed_images_are_evaluated(zoo, tmp_path):
    folder, specs, _ = zoo
    resident = _run(folder, specs, CacheStore(tmp_path / "a"), out=tmp_path / "run")
    cost = resident.config["cost"]
    # All four targets fit in memory: one group, each set streamed past all of them once.
    assert cost["stage2_groups"] == 1 and 0 < cost["stage2_read_ratio"] <= 1.2
    assert cost["adversarial_bytes"] == 4 * 24 * 3 * SIDE * SIDE
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cost"] == cost
    timings = (tmp_path / "run" / "timings.csv").read_text().splitlines()
    assert timings[0].startswith("model,load_s") and len(timings) == 5

    # One target at a time reads every set once per target, and gives the same predictions bit for bit.
    one_by_one = _run(folder, specs, CacheStore(tmp_path / "b"), max_resident=1)
    assert one_by_one.config["cost"]["stage2_groups"] == 4 and one_by_one.config["cost"]["stage2_read_ratio"] > 3.5
    assert np.array_equal(one_by_one.transfer.adv_pred, resident.transfer.adv_pred)
    assert resident.sat.equals(one_by_one.sat)

    # Target t is evaluated on set s exactly where both models are right on the clean image, and there it
    # predicts what a plain forward pass over the whole set predicts.
    transfer, store = resident.transfer, CacheStore(tmp_path / "a")
    correct = transfer.clean_correct
    assert 0 < correct.mean() < 1 and len({tuple(c) for c in correct}) > 1  # the masks differ between models
    needed_count = 0
    for s, key in enumerate(transfer.adv_keys):
        adv = torch.from_numpy(store.get("adv", key)["images"])
        for t, spec in enumerate(transfer.specs):
            mask = correct[s] & correct[t]
            full = predict(create_model(spec, cache=store), adv, 7).argmax(-1).numpy()
            assert np.array_equal(transfer.adv_pred[s, t][mask], full[mask])
            assert (transfer.adv_pred[s, t][~mask] == -1).all()
            needed_count += int(mask.sum())
    assert cost["stage2_images_evaluated"] == needed_count
    assert cost["stage2_images_skipped"] == 4 * 4 * 24 - needed_count > 0

    # A rerun reads the predictions back: no set is read in stage 2, nothing is computed.
    again = _run(folder, specs, store)
    assert again.cache_misses == 0 and again.config["cost"]["stage2_adversarial_bytes_read"] == 0
    assert again.sat.equals(resident.sat)


def test_a_model_that_cannot_run_stops_the_run_before_any_attack(zoo, tmp_path):
    folder, specs, broken = zoo
    store = CacheStore(tmp_path / "cache")
    with pytest.raises(
        ArchsimError,
        match=r"^1 of 3 models cannot run \(.*broken.pt.*ValueError: deliberately broken\); .*keep_going",
    ):
        _run(folder, [*specs[:2], broken], store)
    assert not (tmp_path / "cache" / "adv").exists()  # nothing attacked

    with pytest.warns(UserWarning, match="left out .*broken.pt.*deliberately broken"):
        kept = _run(folder, [*specs[:2], broken], store, keep_going=True, out=tmp_path / "run")
    assert list(kept.sat.index) == ["r0", "r1"]
    assert list(kept.config["left_out"]) == [broken] and "deliberately broken" in kept.config["left_out"][broken]
    assert kept.config["settings"]["keep_going"] is True
    with pytest.raises(ArchsimError, match="only 1 of the models can run"):
        _run(folder, [specs[0], broken], store, keep_going=True)


def test_max_resident_is_checked():
    with pytest.raises(ArchsimError, match="max_resident must be a positive whole number or 'auto', got 0"):
        run_sat(["zoo:vit", "zoo:mixer"], max_resident=0)


def test_default_precision_is_bf16_on_cuda_only():
    from archsim.models import default_precision

    assert (
        default_precision("cpu") == "fp32"
        and default_precision("cuda") == "bf16"
        and default_precision("cuda:1") == "bf16"
    )


def test_attack_seeds_measure_the_attacks_own_noise(zoo, tmp_path):
    """--attack-seeds 3: the run's SAT stays that of its seed; pairs.csv gains the spread over the seeds, equal
    to three runs at seeds 0, 1, 2 (all images, so only the random starts change); config.json their rank
    correlation."""
    from itertools import combinations

    from scipy.stats import spearmanr

    folder, specs, _ = zoo
    store = CacheStore(tmp_path / "cache")
    noisy = _run(folder, specs, store, attack_seeds=3, out=tmp_path / "run")
    single = [_run(folder, specs, store, seed=k) for k in range(3)]
    assert noisy.sat.equals(single[0].sat) and noisy.config["settings"]["attack_seeds"] == 3
    stack = np.stack([run.sat.to_numpy() for run in single])
    assert not np.allclose(stack[0], stack[1], equal_nan=True)  # the starts matter
    pairs = noisy.pairs.set_index(["source", "target"])
    names = list(noisy.sat.index)
    for a, b in [(0, 1), (2, 3), (1, 0)]:
        values = stack[:, a, b]
        assert pairs.loc[(names[a], names[b]), "sat_seed_mean"] == pytest.approx(values.mean())
        assert pairs.loc[(names[a], names[b]), "sat_seed_sd"] == pytest.approx(values.std(ddof=1))
        assert pairs.loc[(names[a], names[b]), "sat_seed_max"] == pytest.approx(values.max())
    off = ~np.eye(4, dtype=bool)
    rhos = [spearmanr(stack[a][off], stack[b][off])[0] for a, b in combinations(range(3), 2)]
    noise = json.loads((tmp_path / "run" / "config.json").read_text())["attack_seed_noise"]
    assert (
        noise["seeds"] == 3
        and noise["spearman_mean"] == pytest.approx(np.mean(rhos))
        and noise["spearman_min"] == pytest.approx(min(rhos))
    )
    with pytest.raises(ArchsimError, match="attack_seeds must be a positive whole number, got 0") as error:
        _run(folder, specs, store, attack_seeds=0)
    assert error.value.parameter == "attack_seeds"  # a ParameterError: the CLI names --attack-seeds


def test_a_fault_that_passes_does_not_fail_the_check(zoo, tmp_path):
    """A forward pass that raises once (a passing fault) is checked again, and the model stays in the run."""
    from archsim.engines.tests.flaky import Flaky

    folder, specs, _ = zoo
    marker = tmp_path / "fired"
    torch.save(Flaky(QuadrantReader(7), marker, "raise", min_batch=1), tmp_path / "flaky.pt")
    flaky = f"file:{tmp_path / 'flaky.pt'},input_size=3:{SIDE}:{SIDE},mean=0:0:0,std=1:1:1,name=flaky"
    run = _run(folder, [specs[0], flaky], CacheStore(tmp_path / "cache"))
    assert marker.is_file() and list(run.sat.index) == ["r0", "flaky"] and not run.config["left_out"]


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_a_seed_numpy_would_refuse_is_refused_before_any_work(seed, tmp_path):
    with pytest.raises(ArchsimError, match=r"seed must be a whole number from 0 to 4294967295"):
        run_sat(["zoo:vit", "zoo:mixer"], seed=seed, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_images_far_below_a_models_input_size_are_warned_about(zoo, tmp_path):
    folder, specs, _ = zoo
    np.savez(
        tmp_path / "tiny.npz",
        images=np.random.default_rng(0).integers(0, 256, (8, 3, 2, 2), dtype=np.uint8),
        labels=np.arange(8) % 4,
    )
    with pytest.warns(UserWarning, match=r"images are 2x2 px, far below the 224x224 .* upsampled 112x"):
        run_sat(
            specs[:2],
            data=f"npz:{tmp_path / 'tiny.npz'}",
            steps=1,
            n_boot=0,
            device="cpu",
            batch_size=8,
            cache=tmp_path / "c",
        )
