import numpy as np
import pytest

from archsim.cache import CacheStore, digest
from archsim.errors import ArchsimError


def test_roundtrip_and_get_or_compute(tmp_path):
    store = CacheStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(5), "b": np.eye(2)}

    first = store.get_or_compute("k", "abcd", compute)
    second = store.get_or_compute("k", "abcd", compute)
    assert len(calls) == 1 and store.hits == 1 and store.misses == 1
    assert np.array_equal(first["a"], second["a"]) and np.array_equal(second["b"], np.eye(2))
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_entry_is_reported_and_recomputed(tmp_path, damage):
    store = CacheStore(tmp_path)
    store.put("k", "ffff", {"a": np.arange(100)})
    path = store.path("k", "ffff")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-20] ^= 0xFF
        path.write_bytes(bytes(blob))
    else:
        path.write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.warns(UserWarning, match="damaged"):
        assert store.get("k", "ffff") is None
    again = store.get_or_compute("k", "ffff", lambda: {"a": np.arange(100)})
    assert np.array_equal(again["a"], np.arange(100))


def test_digest_is_order_independent_for_dicts():
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1}) != digest({"a": 1, "b": 3})


def _rows(n=300, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 5, 4), dtype=np.uint8)


def test_streamed_entry_round_trips_in_any_batches_and_reads_like_any_entry(tmp_path):
    store, rows = CacheStore(tmp_path), _rows()
    produced = []

    def produce():
        for start in range(0, len(rows), 64):
            produced.append(start)
            yield rows[start : start + 64]

    entry = store.get_or_stream(
        "adv", "ab12", "images", rows.shape, np.uint8, produce, lambda: {"note": np.array("done")}
    )
    again = store.get_or_stream("adv", "ab12", "images", rows.shape, np.uint8, produce)
    # the second call checks the entry and computes nothing
    assert (store.misses, store.hits, len(produced)) == (
        1,
        1,
        5,
    )
    assert entry.shape("images") == rows.shape and str(again.array("note")) == "done"
    for batch_size in (1, 7, 300, 1000):
        batches = list(again.batches("images", batch_size))
        assert all(len(b) == min(batch_size, 300) for b in batches[:-1])
        assert np.array_equal(np.concatenate(batches), rows)
    plain = store.get("adv", "ab12")  # the same file format as put(): checked and loaded whole
    assert np.array_equal(plain["images"], rows) and str(plain["note"]) == "done"


def test_streamed_entry_is_written_only_when_complete_and_takes_unknown_widths_from_its_first_batch(tmp_path):
    store, rows = CacheStore(tmp_path), _rows()
    with pytest.raises(ValueError, match="256 rows written"):
        store.put_stream("adv", "cd34", "images", rows.shape, np.uint8, (rows[s : s + 64] for s in range(0, 256, 64)))
    with pytest.raises(ValueError, match="does not fit"):
        store.put_stream("adv", "cd34", "images", rows.shape, np.uint8, [rows[:, :1]])
    with pytest.raises(ValueError, match="no batch to take the shape"):
        store.put_stream("adv", "cd34", "images", (0, -1), np.uint8, [])
    with pytest.raises(ValueError, match="does not fit"):  # a width taken from the first batch binds the rest
        store.put_stream("adv", "cd34", "images", (300, -1, 5, 4), np.uint8, [rows[:100], rows[100:, :2]])
    assert store.open("adv", "cd34") is None and not list(tmp_path.rglob("*.tmp"))
    store.put_stream("adv", "cd34", "images", (300, -1, 5, -1), np.uint8, (rows[s : s + 64] for s in range(0, 300, 64)))
    assert np.array_equal(store.open("adv", "cd34").mapped("images"), rows)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damage_found_while_streaming_removes_the_entry_with_a_one_line_error(tmp_path, damage):
    store, rows = CacheStore(tmp_path), _rows()
    store.put_stream("adv", "ef56", "images", rows.shape, np.uint8, [rows])
    path = store.path("adv", "ef56")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF  # inside the pixels: only the CRC-32 at the end of the array can tell
    else:
        blob = blob[: len(blob) // 2]
    path.write_bytes(bytes(blob))
    with pytest.raises(ArchsimError, match=r"is damaged .*it was removed, rerun to recompute it") as caught:
        list(store.open("adv", "ef56").batches("images", 64))
    assert "\n" not in str(caught.value) and not path.exists()
    # The next run's check finds it missing and writes it again.
    entry = store.get_or_stream("adv", "ef56", "images", rows.shape, np.uint8, lambda: [rows])
    assert np.array_equal(np.concatenate(list(entry.batches("images", 100))), rows)


def test_a_damaged_entry_is_rewritten_by_get_or_stream(tmp_path):
    store, rows = CacheStore(tmp_path), _rows()
    store.put_stream("adv", "0a0b", "images", rows.shape, np.uint8, [rows])
    path = store.path("adv", "0a0b")
    blob = bytearray(path.read_bytes())
    blob[-30] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="damaged"):
        store.get_or_stream("adv", "0a0b", "images", rows.shape, np.uint8, lambda: [rows])
    assert store.misses == 1 and store.get("adv", "0a0b") is not None


def test_mapped_arrays_equal_loaded_ones_and_cost_no_copy(tmp_path):
    store, rows = CacheStore(tmp_path), _rows()
    logits = np.random.default_rng(1).standard_normal((4, 300, 7)).astype(np.float32)
    store.put("pred", "1a2b", {"logits": logits, "small": np.arange(3)})  # np.savez's layout
    entry = store.get_or_stream(
        "adv", "3c4d", "images", rows.shape, np.uint8, lambda: [rows[:100], rows[100:]], lambda: {"note": np.array("x")}
    )
    for mapped, expected in ((store.open("pred", "1a2b").mapped("logits"), logits), (entry.mapped("images"), rows)):
        assert isinstance(mapped, np.memmap) and mapped.filename is not None and not mapped.flags.writeable
        assert mapped.dtype == expected.dtype and np.array_equal(mapped, expected)
    assert np.array_equal(store.open("pred", "1a2b").mapped("small"), np.arange(3)) and str(entry.mapped("note")) == "x"
    with pytest.raises(ArchsimError, match="holds no array 'other'"):
        entry.mapped("other")


def test_a_cut_short_entry_is_not_mapped(tmp_path):
    store, rows = CacheStore(tmp_path), _rows()
    store.put_stream("adv", "5e6f", "images", rows.shape, np.uint8, [rows])
    path = store.path("adv", "5e6f")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ArchsimError, match="is damaged .*rerun to recompute it") as caught:
        store.open("adv", "5e6f").mapped("images")
    assert "\n" not in str(caught.value) and not path.exists()


def test_a_long_loop_writes_a_line_at_a_steady_rate_to_a_log(monkeypatch, capsys):
    """Off a terminal: no bar, but a line every LOG_EVERY_S seconds with the rate and the time left."""
    from archsim import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    assert list(progress.steps(iter(range(3)), "attack m", 3, per_step=8)) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    # none once done
    assert [line.split(",")[0] for line in lines] == [
        "attack m: 1/3 batches",
        "attack m: 2/3 batches",
    ]
    assert all(" images/s, about " in line and line.endswith(" s left") for line in lines)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 3600.0)
    list(progress.steps(iter(range(3)), "attack m", 3))
    assert capsys.readouterr().err == ""


def test_a_killed_writers_temporary_file_goes_when_the_entry_is_written(tmp_path):
    from archsim.cache import CacheStore

    store = CacheStore(tmp_path)
    path = store.path("pred", "ab" * 32)
    path.parent.mkdir(parents=True)
    stale = path.parent / f".{path.name}.x1y2z3.tmp"  # what SIGKILL during atomic_write leaves
    stale.write_bytes(b"half an entry")
    other = path.parent / f".{'cd' * 32}.bin.q.tmp"  # another entry's: not this writer's to remove
    other.write_bytes(b"x")
    store.put_computed("pred", "ab" * 32, {"pred": np.arange(3)})
    assert not stale.exists() and other.exists() and store.get("pred", "ab" * 32)["pred"].tolist() == [0, 1, 2]


def test_check_cache_makes_the_store_once(tmp_path, monkeypatch):
    from archsim.cache import CacheStore, check_cache

    store = CacheStore(tmp_path / "a")
    assert check_cache(store) is store and check_cache(store, tmp_path / "run's") is store
    assert check_cache(tmp_path / "b").root == tmp_path / "b"
    assert check_cache(None, tmp_path / "run's").root == tmp_path / "run's"  # a run's own cache where none is given
    monkeypatch.setenv("ARCHSIM_CACHE", str(tmp_path / "env"))
    assert check_cache(None).root == tmp_path / "env"


def test_an_entry_another_process_wrote_while_this_one_waited_counts_as_used(tmp_path):
    writer, reader = CacheStore(tmp_path), CacheStore(tmp_path)
    real_get = reader.get
    calls = []

    def get_after_the_other_wrote(kind, key):
        # The first look finds nothing; the other process then writes the entry before this one takes the lock.
        calls.append(key)
        if len(calls) == 1:
            writer.put(kind, key, {"a": np.arange(3)})
            return None
        return real_get(kind, key)

    reader.get = get_after_the_other_wrote
    found = reader.get_or_compute("k", "beef", lambda: pytest.fail("computed although the entry was there"))
    assert found["a"].tolist() == [0, 1, 2] and reader.hits == 1 and reader.misses == 0
    assert ("k", "beef") in reader.used  # so the run's cache_entries.txt lists it and `cache prune --run` keeps it


def test_a_tally_counts_only_the_work_after_it_on_a_store_that_served_other_work(tmp_path):
    store = CacheStore(tmp_path)
    store.get_or_compute("a", "k1", lambda: {"x": np.arange(2)})
    store.get_or_compute("a", "k2", lambda: {"x": np.arange(2)})
    tally = store.tally()
    store.get_or_compute("a", "k1", lambda: {"x": np.arange(2)})  # used before and again: this work's too
    store.get_or_compute("a", "k3", lambda: {"x": np.arange(2)})
    store.used.update([("b", "k4")])  # as the engines merge their workers' footprints
    assert tally.counts() == (1, 1, {("a", "k1"), ("a", "k3"), ("b", "k4")})
    assert store.used == {("a", "k1"), ("a", "k2"), ("a", "k3"), ("b", "k4")} and (store.hits, store.misses) == (1, 3)
