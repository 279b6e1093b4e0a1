import numpy as np
import pytest

from archsim.cache import CacheStore, digest


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
