import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test``'s ``-n``) each worker runs torch on one thread, and so does every process it
    starts (the CLI's subprocesses, Ray's workers, the training workers): two workers of two threads each on two cores
    left their OpenMP threads spinning against each other: the suite was stopped at 61 % after 24 minutes, against 7
    minutes in all on one thread each."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache for the session's end-to-end tests: the zoo models they use are trained once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder: a command given no --out writes runs/<timestamp> into the working
    directory, which must not be the checkout."""
    monkeypatch.chdir(tmp_path)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, test files heaviest first, so that the workers end together: a file counts by its slow
    end-to-end tests (Ray clusters, trained zoos), then by its tests. xdist would otherwise order them by their number
    of tests alone and could leave a file of few, long tests (the Ray clusters, 2 minutes) to the end, with the other
    worker idle: 7 min 24 s against 8 min 25 s for the same suite on the 2-core VM. Serial runs keep pytest's order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    weight: dict[str, list[int]] = {}
    for item in items:
        counts = weight.setdefault(item.nodeid.split("::")[0], [0, 0])
        counts[0] += item.get_closest_marker("slow") is not None
        counts[1] += 1
    order = {path: rank for rank, path in enumerate(sorted(weight, key=lambda p: (-weight[p][0], -weight[p][1])))}
    items.sort(key=lambda item: order[item.nodeid.split("::")[0]])
