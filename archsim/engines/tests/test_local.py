"""The local engine: tasks in order, and their progress where stderr is a log file."""

import re

import numpy as np

from archsim.cache import CacheStore, digest
from archsim.engines import LocalEngine


def square(device: str, store: CacheStore, value: int) -> int:
    entry = store.get_or_compute("toy", digest("square", value), lambda: {"square": np.array(value * value)})
    return int(entry["square"])


def test_results_in_order_and_a_line_per_task_that_computed(tmp_path, capsys):
    store = CacheStore(tmp_path)
    engine = LocalEngine("cpu")
    assert engine.map(square, [(2,), (3,)], store, "warm up", ["two", "three"]) == [4, 9]
    capsys.readouterr()
    assert engine.map(square, [(3,), (4,), (2,), (5,)], store, "squares", ["three", "four", "two", "five"]) == [
        9,
        16,
        4,
        25,
    ]
    lines = capsys.readouterr().err.splitlines()  # captured: not a terminal, so lines instead of a bar
    assert [line.rsplit(" (", 1)[0] for line in lines] == ["squares: 2/4 four", "squares: 4/4 five"], lines
    # Each line: the task's own time, the stage's so far, and (but for the last) the time left at the pace so far.
    assert re.fullmatch(r"squares: 2/4 four \(\d+\.\d s; \d+ s in all, about \d+ s left\)", lines[0]), lines
    assert re.fullmatch(r"squares: 4/4 five \(\d+\.\d s; \d+ s in all\)", lines[1]), lines
    # A rerun answered from the cache alone says nothing.
    assert engine.map(square, [(4,), (5,)], store, "squares", ["four", "five"]) == [16, 25]
    assert capsys.readouterr().err == ""
