"""A run over data kept in the cache, read batch by batch, equals the run over the same data in memory."""

import numpy as np

from archsim.attacks import create_attack
from archsim.cache import CacheStore
from archsim.data import load_data
from archsim.data.imageset import StoredImages
from archsim.models import create_model
from archsim.transfer import predict
from archsim.transfer.stages import run_transfer

SPECS = ["zoo:resnet-s0", "zoo:convnext"]  # trained for the CLI tests as well


def store_in(folder, cache_dir):
    # Fresh results, shared trained weights: the zoo is trained once per test session.
    folder.mkdir()
    (cache_dir / "zoo").mkdir(exist_ok=True)
    (folder / "zoo").symlink_to(cache_dir / "zoo", target_is_directory=True)
    return CacheStore(folder)


def test_streamed_run_equals_in_memory_run(tmp_path, cache_dir):
    digits = load_data("digits", n_images=50)
    np.savez(tmp_path / "d.npz", images=digits.images.numpy(), labels=digits.labels.numpy())
    memory_store, stream_store = store_in(tmp_path / "memory", cache_dir), store_in(tmp_path / "stream", cache_dir)
    memory = load_data(f"npz:{tmp_path / 'd.npz'}")
    stored = load_data(f"npz:{tmp_path / 'd.npz'}", store=stream_store)
    assert isinstance(stored.images, StoredImages) and not isinstance(memory.images, StoredImages)
    attack = create_attack("pgd", eps=0.1, steps=3)
    # Batch sizes that do not divide the 50 images, different in the two runs: results do not depend on them.
    a = run_transfer(SPECS, memory, attack, memory_store, seed=1, batch_size=16)
    b = run_transfer(SPECS, stored, attack, stream_store, seed=1, batch_size=7)
    assert a.adv_keys == b.adv_keys and np.array_equal(a.adv_pred, b.adv_pred)
    assert np.allclose(a.clean_logits, b.clean_logits, atol=1e-4)
    for key in a.adv_keys:
        assert np.array_equal(memory_store.get("adv", key)["images"], stream_store.get("adv", key)["images"])
    # A second run reads everything back, data included, and computes nothing.
    misses = stream_store.misses
    again = run_transfer(
        SPECS, load_data(f"npz:{tmp_path / 'd.npz'}", store=stream_store), attack, stream_store, seed=1, batch_size=7
    )
    assert np.array_equal(again.adv_pred, b.adv_pred) and stream_store.misses == misses


def test_results_that_grow_with_the_data_are_mapped_or_compact(tmp_path, cache_dir):
    store = store_in(tmp_path / "results", cache_dir)
    data = load_data("digits", n_images=40)
    result = run_transfer(SPECS, data, create_attack("pgd", eps=0.1, steps=2), store, seed=0, batch_size=16)
    # The clean logits are one read-only map of a cache entry, equal to each model's own logits.
    assert isinstance(result.clean_logits, np.memmap) and not result.clean_logits.flags.writeable
    assert result.clean_logits.shape == (2, 40, 10)
    for n, spec in enumerate(SPECS):
        assert np.allclose(
            result.clean_logits[n], predict(create_model(spec, cache=store), data.images, 13).numpy(), atol=1e-5
        )
    assert result.adv_pred.dtype == np.int16 and result.clean_pred.dtype == np.int16
    assert np.array_equal(result.clean_pred, np.asarray(result.clean_logits).argmax(-1))
    assert sum(kind == "logits" for kind, _ in store.used) == 1


def test_the_evaluation_of_one_resident_group_reports_its_progress_per_set(tmp_path, cache_dir, monkeypatch, capsys):
    """All targets resident make one group: off a terminal, a line per set streamed past it (count, rate, time left)
    instead of silence until the stage ends."""
    from archsim import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    store = store_in(tmp_path / "results", cache_dir)
    data = load_data("digits", n_images=30).with_views("own")
    run_transfer(SPECS, data, create_attack("pgd", eps=25 / 255, steps=1), store, seed=0, batch_size=16)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("evaluate 2 targets on each set")]
    assert [line.split(",")[0] for line in lines] == ["evaluate 2 targets on each set: 1/2 sets"]
    assert " sets/s, about " in lines[0]
