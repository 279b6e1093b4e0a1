"""The Ray engine: each model's task of a stage is one Ray task on a cluster.

Where results go: the tasks write the content-addressed cache themselves, so the
cache folder must be on a file system every node mounts (NFS, Lustre, a
Kubernetes ReadWriteMany volume). Objects given in Python (modules, held by
:mod:`archsim.held` under the keys their specs name) go to the tasks that name
them through Ray's object store, each put there once. Every task checks that before computing, by
looking for a probe file the driver has just written there; a node that does not
see it fails the run with a one-line error instead of filling a private cache.
Cache writes are atomic and locked per entry, so a retried task, or two tasks on
the same entry, are harmless. Only the small results (clean logits, predicted
labels) come back through Ray's object store.

Scheduling: a task asks for one GPU when the cluster has GPUs (Ray then sets its
``CUDA_VISIBLE_DEVICES``) and ``cpus_per_task`` CPUs in either case. The caller maps the attack
stage to completion before it submits the evaluation stage, so no evaluation task
sits on a GPU waiting for an attack. Tasks that raise, whose worker dies or whose
node leaves the cluster are retried (``max_retries``); an :class:`ArchsimError`
(bad input) is not retried but reported as it is.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from archsim.cache import CacheStore, atomic_write_text
from archsim.engines.base import Task, TaskProgress
from archsim.errors import ArchsimError, ParameterError, one_line
from archsim.held import held, hold, referenced

DEVICES = ("auto", "cpu", "cuda")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ParameterError(
            "engine", "ray needs Ray, which is not installed; pip install 'archsim[ray]', or use {} local"
        ) from None
    return ray


@dataclass(frozen=True)
class TaskReport:
    """Where and how one task ran (what it saw of its GPUs included)."""

    label: str
    node_ip: str
    node_id: str
    pid: int
    gpu_ids: tuple[str, ...]
    cuda_visible_devices: str | None
    device: str
    started: float
    ended: float


@dataclass(frozen=True)
class _Failure:
    """An ArchsimError inside a task: bad input, which no retry mends."""

    message: str


def _run_task(
    task: Task, store_root: str, probe: str, use_gpu: bool, label: str, shipped: dict[str, Any], *job: Any
) -> Any:
    """Body of every Ray task: check the node, take the objects the job's specs name from the object store, pick the
    device, run ``task`` on the shared cache."""
    import ray
    import torch

    for key, ref in shipped.items():
        if held(key) is None:
            hold(key, ray.get(ref))

    started = time.time()
    node_ip = ray.util.get_node_ip_address()
    if not (Path(store_root) / probe).is_file():
        return _Failure(
            f"the cache {store_root} is not visible on Ray node {node_ip}; put --cache on a file system that every "
            f"node mounts"
        )
    gpu_ids = tuple(str(i) for i in ray.get_gpu_ids())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if use_gpu and (visible or "").split(",") != list(gpu_ids):
        # Ray pins a GPU task to its own devices; one that sees other devices would share their memory with another
        # task.
        raise RuntimeError(f"task {label} holds GPUs {gpu_ids} but sees CUDA_VISIBLE_DEVICES={visible!r}")
    device = "cpu"
    if use_gpu:
        if torch.cuda.is_available():
            device = "cuda"
        else:
            warnings.warn(
                f"Ray gave task {label} GPU {','.join(gpu_ids)} but torch sees no CUDA device on {node_ip}; running "
                f"it on the CPU",
                stacklevel=2,
            )
    store = CacheStore(store_root)
    try:
        result = task(device, store, *job)
    except ArchsimError as error:
        return _Failure(str(error))
    report = TaskReport(
        label,
        node_ip,
        ray.get_runtime_context().get_node_id(),
        os.getpid(),
        gpu_ids,
        visible,
        device,
        started,
        time.time(),
    )
    return result, store.hits, store.misses, store.bytes_read, sorted(store.used), report


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's long connection retries, when nothing listens at ``address``."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ParameterError(
            "address",
            f"{address!r} is not HOST:PORT (or ray://HOST:PORT, or auto); give the head node's address, "
            f"e.g. 10.0.0.1:6379",
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ParameterError(
            "address",
            f"no Ray cluster reachable at {address} ({reason}); start one there with `ray start --head --port={port}` "
            f"or fix {{}}",
        ) from None


def _one_line(error: BaseException) -> str:
    return one_line(getattr(error, "cause", None) or error)


class RayEngine:
    """Runs each task as a Ray task; see the module text for where results go.

    Parameters
    ----------
    address : str, optional
        ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` of a running cluster; default:
        start a Ray instance on this machine (all its GPUs). A Ray connection this
        process already holds is used as it is.
    device : str
        ``auto`` (a GPU per task when the cluster has GPUs), ``cuda`` (require them) or ``cpu``.
    cpus_per_task : float
        CPUs each task asks for; Ray sets the task's thread count from it.
    max_retries : int
        Retries of a task that raised or whose worker or node died.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, device: str = "auto", cpus_per_task: float = 1, max_retries: int = 3
    ) -> None:
        ray = import_ray()
        if device not in DEVICES:
            raise ParameterError(
                "device", f"{device} with --engine ray: Ray gives each task its own GPU; use {', '.join(DEVICES)}"
            )
        if not cpus_per_task > 0:
            raise ParameterError("cpus_per_task", f"must be positive, got {cpus_per_task}")
        self._opened = False
        if not ray.is_initialized():
            if address not in (None, "auto"):
                _check_reachable(address)
            try:
                ray.init(address=address, logging_level=logging.WARNING)
            except ConnectionError as error:
                reason = str(error).split(". ")[0]
                raise ParameterError(
                    "address",
                    f"cannot connect to Ray at {address}: {reason}; start a cluster (`ray start --head`) or fix {{}}",
                ) from None
            self._opened = True
        gpus = ray.cluster_resources().get("GPU", 0)
        if device == "cuda" and not gpus:
            self.close()
            raise ParameterError(
                "device", "cuda with --engine ray, but the Ray cluster has no GPUs; use {} auto or cpu"
            )
        self.use_gpu = device != "cpu" and gpus > 0
        self.device = "cuda" if self.use_gpu else "cpu"
        self.cpus_per_task = cpus_per_task
        # Tasks the cluster runs at once: a stage that splits its work into groups makes this many.
        self.slots = max(1, int(gpus) if self.use_gpu else int(ray.cluster_resources().get("CPU", 1) // cpus_per_task))
        self.max_retries = max_retries
        self.reports: list[TaskReport] = []
        """One per finished task, in the order they finished."""
        self._remote = ray.remote(_run_task)
        self._shipped: dict[str, Any] = {}

    def map(
        self,
        task: Task,
        jobs: Sequence[tuple],
        store: CacheStore,
        desc: str,
        labels: Sequence[str],
        report_all: bool = False,
    ) -> list[Any]:
        ray = import_ray()
        store.root.mkdir(parents=True, exist_ok=True)
        probe = f".ray-probe-{uuid.uuid4().hex}"
        atomic_write_text(store.root / probe, "archsim: the cache must be visible on every Ray node\n")
        options = dict(
            num_cpus=self.cpus_per_task,
            num_gpus=1 if self.use_gpu else 0,
            max_retries=self.max_retries,
            retry_exceptions=True,
            scheduling_strategy="SPREAD",  # tasks are few and heavy: one per node before two on one
        )
        # Large arguments shared by every job (the images, the attack) go to the object store once, not once per task.
        shared: dict[int, Any] = {}

        def by_ref(arg: Any) -> Any:
            if isinstance(arg, (str, int, float, bool, type(None))):
                return arg
            if id(arg) not in shared:
                shared[id(arg)] = ray.put(arg)
            return shared[id(arg)]

        pending = {
            self._remote.options(**options, name=f"{desc}: {label}").remote(
                task, str(store.root), probe, self.use_gpu, label, self._ship(job), *map(by_ref, job)
            ): i
            for i, (label, job) in enumerate(zip(labels, jobs, strict=True))
        }
        results: list[Any] = [None] * len(jobs)
        try:
            with TaskProgress(len(jobs), f"{desc} (ray)") as progress:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    i = pending.pop(done[0])
                    try:
                        value = ray.get(done[0])
                    except ray.exceptions.RayError as error:
                        raise ArchsimError(
                            f"{desc}: the task of {labels[i]} failed {self.max_retries + 1} times, last with "
                            f"{_one_line(error)}"
                        ) from None
                    if isinstance(value, _Failure):
                        raise ArchsimError(value.message)
                    results[i], hits, misses, bytes_read, used, report = value
                    store.hits += hits
                    store.misses += misses
                    store.count_read(bytes_read)
                    store.used.update((kind, key) for kind, key in used)
                    self.reports.append(report)
                    progress.done(labels[i], computed=report_all or misses > 0)
        finally:
            for ref in pending:  # after a failure: what finished is cached, the rest is not worth waiting for
                ray.cancel(ref)
            (store.root / probe).unlink(missing_ok=True)
        return results

    def _ship(self, job: tuple) -> dict[str, Any]:
        """Object-store references of the objects given in Python (:mod:`archsim.held`) that ``job``'s specs name,
        each put there once per engine."""
        ray = import_ray()
        refs = {}
        for key, value in referenced(job).items():
            if key not in self._shipped:
                try:
                    self._shipped[key] = ray.put(value)
                except Exception as error:  # noqa: BLE001 - pickling fails in many ways (a lock, a generator...)
                    raise ParameterError(
                        "engine",
                        f"an object given in Python (fingerprint {key}) cannot go to Ray's workers: it cannot be "
                        f"pickled ({one_line(error)[:200]}); make it picklable, or use {{}} local",
                    ) from None
            refs[key] = self._shipped[key]
        return refs

    def close(self) -> None:
        if self._opened:
            import_ray().shutdown()
            self._opened = False
