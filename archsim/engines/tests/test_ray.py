"""The Ray engine on real multi-node Ray clusters started on this machine (head + two worker nodes, CPU only).

Every Ray run computes into a cache of its own that holds only the trained weights,
so its matrix is its own work, compared with a local run's.
"""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from itertools import combinations
from pathlib import Path

import pandas as pd
import pytest
import torch

from archsim.api import run_sat
from archsim.cache import CacheStore
from archsim.engines import create_engine
from archsim.engines.tests.flaky import save_flaky
from archsim.errors import ParameterError
from archsim.models import create_model, object_spec
from archsim.tests.cli_runner import run_cli
from archsim.tests.test_independent_sat import DIGITS_ATTACK, DIGITS_MODELS, assert_matches, digits_reference
from archsim.tests.test_independent_sat import fresh_cache as independent_cache
from archsim.tests.test_resilience import entries, kill_when

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

# real multi-node clusters: about two minutes; make test runs them, make test-fast does not
pytestmark = pytest.mark.slow

ZOO = ["zoo:resnet-s0", "zoo:resnet-s1", "zoo:convnext"]
# fp32 named: on the cluster with (fake) GPUs, --precision auto would choose bf16, the default on CUDA. A fixed batch
# size: on a busy machine the timed search may settle on batches of 1 or 2, below which the flaky models never fire.
SETTINGS = dict(data="digits", n_images=40, steps=5, rel_step=0.3, n_boot=50, precision="fp32", batch_size=20)
CLI_SETTINGS = [
    *("--n-images", "40", "--steps", "5", "--rel-step", "0.3", "--n-boot", "50"),
    *("--precision", "fp32", "--batch-size", "20"),
]


def start_cluster(**worker) -> Cluster:
    # The head takes no tasks: removing a worker node never takes the driver's connection with it.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=2, **worker)
    cluster.wait_for_nodes()
    return cluster


@pytest.fixture(scope="module")
def weights(cache_dir, tmp_path_factory):
    """A folder with the trained zoo weights (the flaky model wraps resnet-s2's network)."""
    store = CacheStore(cache_dir)
    models = [create_model(spec, cache=store) for spec in ZOO + ["zoo:resnet-s2"]]
    return {"cache": cache_dir, "net": models[-1].net, "folder": tmp_path_factory.mktemp("models")}


def fresh_cache(weights, folder: Path) -> Path:
    """A cache with the trained weights and nothing else: every set and prediction is recomputed."""
    shutil.copytree(weights["cache"] / "zoo", folder / "zoo")
    return folder


@pytest.fixture(scope="module")
def cpu_cluster():
    cluster = start_cluster()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def flaky(weights, *modes: str) -> tuple[list[str], list[Path]]:
    saved = [save_flaky(weights["net"], weights["folder"], mode) for mode in modes]
    return [spec for spec, _ in saved], [marker for _, marker in saved]


@pytest.fixture(scope="module")
def local_reference(weights, tmp_path_factory):
    """The local engine's matrices: the 4-model zoo, and the zoo with (disarmed) flaky models."""
    cache = fresh_cache(weights, tmp_path_factory.mktemp("reference") / "cache")
    matrices = {"zoo": run_sat(ZOO + ["zoo:resnet-s2"], **SETTINGS, cache=cache).sat}
    for case, modes in {"faults": ("raise", "exit"), "stall": ("stall",)}.items():
        specs, markers = flaky(weights, *modes)
        for marker in markers:
            marker.touch()  # disarmed: the reference has no fault
        matrices[case] = run_sat(ZOO + specs, **SETTINGS, cache=cache).sat
        for marker in markers:
            marker.unlink()
    return matrices


def ray_run(address: str, specs: list[str], cache: Path, **engine):
    runner = create_engine("ray", device="auto", address=address, **engine)
    try:
        return run_sat(specs, **SETTINGS, cache=cache, engine=runner), runner.reports
    finally:
        runner.close()


def test_four_model_zoo_on_three_nodes_equals_the_local_engine(cpu_cluster, weights, local_reference, tmp_path):
    """Two models by spec, two given in Python: the workers build those from Ray's object store (the cache holds no
    copy of them, and the driver's holder is not the workers'), and the matrix is the local engine's."""
    store = CacheStore(weights["cache"])
    given = {spec.split(":")[1]: create_model(spec, cache=store) for spec in ZOO[1:] + ["zoo:resnet-s2"]}
    objects = [object_spec(model.net, name, model.preprocess) for name, model in given.items()]
    run, reports = ray_run(cpu_cluster.address, ZOO[:1] + objects, fresh_cache(weights, tmp_path / "cache"))
    assert not list((tmp_path / "cache").glob("module/*/*.bin"))
    pd.testing.assert_frame_equal(run.sat, local_reference["zoo"], check_exact=True)
    assert run.config["engine"] == "ray"
    # Clean logits and a set per source, 16 predictions: all computed by the tasks; then the stacked logits, here; and
    # once, by whichever task came first, the 16-px view of the digits three of the four models take.
    assert run.cache_misses == 4 * 2 + 4 * 4 + 1 + 1
    # A check and an attack task per model, and one evaluation task per group of targets: the cluster runs 4 tasks at
    # once, so 4 groups of one target, each reading every set once.
    cost = run.config["cost"]
    assert cost["stage2_groups"] == 4 and len(reports) == 4 + 4 + 4 and 3.9 < cost["stage2_read_ratio"] <= 4.0
    assert len({r.node_id for r in reports}) == 2  # both worker nodes took tasks
    assert {r.device for r in reports} == {"cpu"} and all(r.gpu_ids == () for r in reports)

    class Unpicklable(torch.nn.Linear):
        def __reduce_ex__(self, protocol):
            raise TypeError("this module refuses pickling")

        def __deepcopy__(self, memo):
            twin = Unpicklable(self.in_features, self.out_features)
            twin.load_state_dict(self.state_dict())
            return twin

    flat = object_spec(torch.nn.Sequential(torch.nn.Flatten(), Unpicklable(32 * 32, 10)), "flat", {"mean": 0, "std": 1})
    with pytest.raises(ParameterError, match="cannot go to Ray's workers: it cannot be pickled") as error:
        ray_run(cpu_cluster.address, ZOO[:1] + [flat], tmp_path / "cache")
    assert error.value.parameter == "engine"


def test_a_ray_run_gives_the_independent_reference_sat(cpu_cluster, weights, tmp_path):
    """Not only the local engine's matrix: the SAT the reference computes from the definition (see
    :mod:`archsim.tests.test_independent_sat`), with one target resident per task."""
    data, reference = digits_reference(weights["cache"], tmp_path)
    store = independent_cache(weights["cache"], tmp_path / "cache")
    runner = create_engine("ray", device="auto", address=cpu_cluster.address)
    try:
        run = run_sat(
            DIGITS_MODELS, data=data, **DIGITS_ATTACK, random_start=False, n_boot=0, cache=store, engine=runner,
            max_resident=1, precision="fp32",
        )  # fmt: skip
    finally:
        runner.close()
    assert run.config["engine"] == "ray" and run.config["cost"]["stage2_groups"] == len(DIGITS_MODELS)
    assert_matches(run, reference, store)


def test_a_task_that_raises_once_and_a_worker_killed_mid_task_end_in_the_same_matrix(
    cpu_cluster, weights, local_reference, tmp_path
):
    """One model's forward raises once; another's kills its worker process mid-task."""
    specs, markers = flaky(weights, "raise", "exit")
    run, _ = ray_run(cpu_cluster.address, ZOO + specs, fresh_cache(weights, tmp_path / "cache"))
    assert all(marker.is_file() for marker in markers), "a fault never fired"
    pd.testing.assert_frame_equal(run.sat, local_reference["faults"], check_exact=True)
    for marker in markers:
        marker.unlink()


def test_fake_gpus_pinned_per_task_and_a_node_removed_mid_run(weights, local_reference, tmp_path):
    """On worker nodes advertising 2 fake GPUs each: concurrent tasks on a node hold different
    ``CUDA_VISIBLE_DEVICES``, and removing the node of a stalled task still ends in the same matrix."""
    (spec,), (marker,) = flaky(weights, "stall")
    cluster = start_cluster(num_gpus=2)
    try:
        outcome: dict = {}
        cache = fresh_cache(weights, tmp_path / "cache")
        driver = threading.Thread(target=lambda: outcome.update(result=ray_run(cluster.address, ZOO + [spec], cache)))
        driver.start()
        deadline = time.monotonic() + 300
        while not (marker.is_file() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        stalled = marker.read_text()
        node = next(n for n in cluster.list_all_nodes() if n.node_id == stalled)
        assert not node.head
        cluster.remove_node(node)  # the stalled task's node leaves; Ray reruns its tasks on the other
        driver.join(timeout=300)
        run, reports = outcome["result"]
    finally:
        ray.shutdown()
        cluster.shutdown()
    pd.testing.assert_frame_equal(run.sat, local_reference["stall"], check_exact=True)
    assert "flaky-stall" in {r.label.split(",name=")[-1] for r in reports if r.node_id != stalled}
    marker.unlink()
    # Inside each task the engine asserted CUDA_VISIBLE_DEVICES == the GPU Ray gave it; torch sees no CUDA here.
    assert all(len(r.gpu_ids) == 1 and r.cuda_visible_devices == r.gpu_ids[0] and r.device == "cpu" for r in reports)
    overlapping = [
        (a, b)
        for a, b in combinations(reports, 2)
        if a.node_id == b.node_id and a.started < b.ended and b.started < a.ended
    ]
    assert overlapping, "no two tasks ran at once on a node"
    assert all(a.cuda_visible_devices != b.cuda_visible_devices for a, b in overlapping)


def archsim_run(cache: Path, out: Path, *engine: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "archsim.cli",
        "run",
        "--models",
        " ".join(ZOO + ["zoo:resnet-s2"]),
        *CLI_SETTINGS,
        "--cache",
        str(cache),
        "--out",
        str(out),
        *engine,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("first,then", [("ray", "local"), ("local", "ray")])
def test_a_run_killed_on_one_engine_resumes_on_the_other(
    first, then, cpu_cluster, weights, local_reference, tmp_path, capsys
):
    cache, out = fresh_cache(weights, tmp_path / "cache"), tmp_path / "run"
    flags = {"ray": ["--engine", "ray", "--address", cpu_cluster.address], "local": []}
    assert kill_when(archsim_run(cache, out, *flags[first]), lambda: entries(cache, "adv") >= 1), (
        "the run ended before it was killed"
    )
    done_before = entries(cache, "adv")
    assert done_before < 4
    code, stdout, err = run_cli(
        capsys,
        "run",
        "--models",
        " ".join(ZOO + ["zoo:resnet-s2"]),
        *CLI_SETTINGS,
        "--cache",
        str(cache),
        "--out",
        str(out),
        *flags[then],
    )
    assert code == 0, err
    computed = int(re.search(r"(\d+) computed", stdout).group(1))
    assert computed < 4 * 2 + 4 * 4  # the killed run's sets were reused
    sat = pd.read_csv(out / "sat.csv", index_col=0)
    pd.testing.assert_frame_equal(sat, local_reference["zoo"], check_exact=False, rtol=0, atol=1e-9)


def test_bad_engine_input_is_one_line(cpu_cluster, tmp_path, capsys, monkeypatch):
    base = [
        "run",
        "--models",
        "zoo:resnet-s0 zoo:resnet-s1",
        "--cache",
        str(tmp_path / "c"),
        "--out",
        str(tmp_path / "o"),
    ]
    cases = [
        (["--engine", "ray", "--address", "127.0.0.1:1"], "no Ray cluster reachable at 127.0.0.1:1"),
        (["--engine", "ray", "--address", "headnode"], "is not HOST:PORT"),
        (["--address", "127.0.0.1:6379"], "--address is for --engine ray"),
        (["--engine", "ray", "--device", "cuda:1"], "Ray gives each task its own GPU"),
        (["--engine", "ray", "--address", cpu_cluster.address, "--device", "cuda"], "the Ray cluster has no GPUs"),
        (["--engine", "ray", "--cpus-per-task", "0"], "--cpus-per-task must be positive"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(capsys, *base, *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "o" / "sat.csv").exists()
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where Ray is not installed
    code, _, err = run_cli(capsys, *base, "--engine", "ray")
    assert code == 2 and "pip install 'archsim[ray]'" in err and len(err.strip().splitlines()) == 1, err
