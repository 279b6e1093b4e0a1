import os
import shutil
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFERENCES = {
    "sat_release": (
        lambda: (SHARED_DATA / "sat_release" / "SAT_release.csv").is_file(),
        "../shared/data/sat_release is not beside the checkout (the SAT paper's published data)",
    ),
    "liang_synthetic": (
        lambda: (SHARED_DATA / "liang_synthetic").is_dir(),
        "../shared/data/liang_synthetic is not beside the checkout (the synthetic experiment's data)",
    ),
    "chromium": (
        lambda: bool(shutil.which("chromium") or shutil.which("chromium-browser")),
        "Chromium is not installed (Debian package 'chromium'; .ci/run installs it)",
    ),
}


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
    """One cache for the session's end-to-end tests: the zoo models they use are trained once.

    Under pytest-xdist each worker has a cache of its own (tests count and damage its entries), but their ``zoo``
    folders are one: a zoo model is trained by the first worker that needs it, under the store's lock beside the
    entry, while another that needs it waits and reads it. The workers had each trained the models their files use,
    the common ones twice.
    """
    cache = tmp_path_factory.mktemp("cache")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "zoo-of-all-workers"
        shared.mkdir(exist_ok=True)
        (cache / "zoo").symlink_to(shared, target_is_directory=True)
    return cache


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder: a command given no --out writes runs/<timestamp> into the working
    directory, which must not be the checkout."""
    monkeypatch.chdir(tmp_path)


def pytest_runtest_setup(item):
    """``@pytest.mark.needs(name)``: a test that needs a reference in :data:`REFERENCES` skips where it is missing,
    and fails under ``CI=true``, where a lost reference must not leave the run green."""
    for mark in item.iter_markers("needs"):
        for name in mark.args:
            available, missing = REFERENCES[name]
            if available():
                continue
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{missing}; under CI=true a missing reference fails the test", pytrace=False)
            pytest.skip(missing)


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
