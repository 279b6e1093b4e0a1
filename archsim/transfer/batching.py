"""Batch sizes measured on the model itself: as large as pays, within the device's memory.

``--batch-size auto`` times the attack step (forward and input gradient) or the
evaluation forward of a model at 1, 2, 4, ... images and keeps the smallest batch
that no larger one beats by 5 %, never passing a share of the memory left on the
device. The best batch differs by model and device, so no fixed number serves:
on a 2-core CPU ResNet-50 at 224 px evaluates 22 images/s at 4 and 11 at 128
(large activations leave the caches and the allocator's reused memory), while the
embedded zoo's small models run up to 1.3x faster at 256-360 than at 128
(BENCHMARKS.md); on a GPU throughput grows with the batch until the device is
busy, so there the search fills memory as far as that pays.

A choice is cached per architecture, input, precision and device, so each is
searched once per machine. Results do not depend on the batch size beyond the
order of floating-point operations (random starts are drawn per image).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from archsim.cache import CacheStore, digest
from archsim.errors import ArchsimError
from archsim.hardware import usable_cores
from archsim.models import Purpose, SimModel, precision_context
from archsim.specs import AUTO, check_batch_size, check_max_resident

MIN_GAIN = 0.05
"""A larger batch must be this much faster (images per second) to be preferred."""
MAX_BATCH_SIZE = 1024
UNMEASURED_LIMIT = 128
"""The largest batch tried where peak memory cannot be measured (a CPU that is not Linux)."""
MEMORY_SHARE = {"cuda": 0.8, "cpu": 0.5}
"""Share of the free memory a batch may take: out of memory is an error on a GPU but a killed process on a CPU,
where the share is also cut in proportion to the cores this process computes on."""
ATTACK_STATE_COPIES = 6
"""Float copies of a batch an attack keeps beside the model's step (clean, adversarial, gradient, momentum...)."""
RESIDENT_SHARE = 0.5
"""Share of a batch's memory budget (:data:`MEMORY_SHARE` of the free memory) that evaluation may fill with resident
targets' weights; the rest is left for their batches."""
UNKNOWN_MEMORY_BYTES = 4 << 30
"""Weights kept resident where the free memory cannot be read (not Linux)."""
_MIN_TIMED_RUNS = 3
_MIN_TIMED_SECONDS = 0.01


TRIAL_RUNS = 4
"""Runs of the work in one trial, its warm-up included: what a trial costs where its own time is not given."""


@dataclass(frozen=True)
class Trial:
    """One batch size tried: seconds per batch, the peak memory it took (None where unmeasured), and the wall
    seconds the whole trial took (None: :data:`TRIAL_RUNS` batches)."""

    seconds: float
    peak_bytes: int | None
    cost: float | None = None

    @property
    def wall_seconds(self) -> float:
        return self.cost if self.cost is not None else TRIAL_RUNS * self.seconds


class OutOfMemory(Exception):
    """The device could not hold the batch."""


def search_batch_size(
    trial: Callable[[int], Trial],
    limit: int,
    budget: int | None,
    min_gain: float = MIN_GAIN,
    extra_bytes_per_image: int = 0,
    work: int | None = None,
) -> int:
    """The batch size to use, from trials at 1, 2, 4, ... up to ``limit`` images.

    Parameters
    ----------
    trial : callable
        Runs the work at a batch size; raises :class:`OutOfMemory` where it does not fit.
    limit : int
        The largest batch to consider (tried last if not a power of two).
    budget : int or None
        Bytes a batch may take at its peak; None tries every size up to ``limit``.
    min_gain : float
        How much faster per image a larger batch must be to be chosen.
    extra_bytes_per_image : int
        Memory the caller keeps per image beside the trial's own peak.
    work : int, optional
        Images (times passes) the chosen batch size will serve. The search then tries a
        larger size only if that pays: if its trial would cost less than the time it
        could save on the work, were the rate to grow again by the factor of the better
        of the last two doublings. None: no such limit.

    Returns
    -------
    int
        The smallest batch size that no larger one tried beat by ``min_gain``. The
        growth stops at the first size that does not fit, would not fit by the
        memory measured so far, after two sizes in a row without such a gain, or
        where the next trial would cost more than it could save.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    sizes = [1 << k for k in range(limit.bit_length()) if 1 << k < limit] + [limit]
    best, best_rate, misses = 0, 0.0, 0
    rates: list[float] = []
    last = 0.0  # wall seconds of the last trial
    measured: list[tuple[int, int]] = []  # (batch, peak bytes)
    for previous, size in zip([0, *sizes], sizes):
        if budget is not None and measured and _predicted_peak(measured, size, extra_bytes_per_image) > budget:
            break
        # A trial's time grows with its batch: the next one costs about the last one scaled by the sizes. At best it
        # speeds the work up as much as the better of the last two doublings did (rates level off as a device fills;
        # two, so that one noisy timing does not end the search). Where neither gained (on a CPU 2 images often run
        # slower than 1), the rule of two misses decides.
        if work is not None and len(rates) >= 2:
            gain = max(rates[-1] / rates[-2], rates[-2] / rates[-3] if len(rates) >= 3 else 0.0)
            if gain > 1 and last * size / previous > work / best_rate * (1 - 1 / gain):
                break
        try:
            result = trial(size)
        except OutOfMemory:
            break
        last = result.wall_seconds
        if result.peak_bytes is not None:
            if budget is not None and result.peak_bytes + extra_bytes_per_image * size > budget:
                break
            measured.append((size, result.peak_bytes))
        rate = size / result.seconds
        rates.append(rate)
        if rate > best_rate * (1 + min_gain):
            best, best_rate, misses = size, rate, 0
        else:
            misses += 1
            if misses == 2:
                break
    if best == 0:
        raise ArchsimError("not even one image fits in the device's free memory; free memory or use a smaller model")
    return best


def _predicted_peak(measured: list[tuple[int, int]], size: int, extra_bytes_per_image: int) -> float:
    """Peak memory at ``size``, extrapolated linearly from the last two sizes measured (or the last alone)."""
    if len(measured) == 1:
        ((b, peak),) = measured
        per_image = peak / b
    else:
        (b0, p0), (b, peak) = measured[-2:]
        per_image = max((peak - p0) / (b - b0), 0)
    return peak + per_image * (size - b) + extra_bytes_per_image * size


def batch_size_for(
    model: SimModel,
    batch_size: int | str,
    purpose: Purpose,
    image_shape: tuple[int, ...],
    n_images: int,
    store: CacheStore | None = None,
    precision: str = "fp32",
    work: int | None = None,
) -> int:
    """``batch_size`` if a number; for ``"auto"`` the size searched on ``model`` (cached in ``store``).

    ``purpose`` is ``"attack"`` (forward and input gradient) or ``"evaluate"``
    (forward under inference mode) on uint8 images of ``image_shape`` [C, H, W].
    ``work``: the passes of one image the batch will serve in all (e.g. images x
    attack steps); the search tries a larger size only where it can pay for itself
    on that work (:func:`search_batch_size`), and its choice is kept per order of
    magnitude of ``work``.
    """
    batch_size = check_batch_size(batch_size)
    if batch_size != AUTO:
        return batch_size
    device = model.device
    budget = memory_budget(device) if _peak_measurable(device) else None
    measurable = budget is not None
    limit = max(1, min(n_images, MAX_BATCH_SIZE if measurable else UNMEASURED_LIMIT))
    state_bytes = ATTACK_STATE_COPIES * 4 * math.prod(image_shape) if purpose == "attack" else 0

    def search() -> dict[str, np.ndarray]:
        trial = _trial_on(model, purpose, tuple(image_shape), precision)
        chosen = search_batch_size(trial, limit, budget, extra_bytes_per_image=state_bytes, work=work)
        return {"batch_size": np.array(chosen)}

    if store is None:
        return int(_timed(search)["batch_size"])
    # The architecture, not the weights: speed and memory do not depend on the values of the weights.
    # The layout changes which sizes run fastest; named only when channels-last, so earlier contiguous choices stay
    # valid.
    layout = ("channels-last",) if model.channels_last else ()
    # A search for a larger job may go further: a larger batch saves more on it.
    scale = () if work is None else ({"work": int(math.log10(max(work, 1)))},)
    key = digest(
        "batch size",
        model.architecture_id,
        purpose,
        list(image_shape),
        limit,
        precision,
        MIN_GAIN,
        _device_description(device),
        *layout,
        *scale,
    )
    # Read and written around the store's counters and without a lock: a batch size is a way to compute results,
    # not one of them, and two processes that search at once both find a valid size.
    found = store.get("batch", key)
    if found is None:
        found = _timed(search)
        store.put("batch", key, found)
    else:
        store.touch("batch", key)  # so `cache prune --older-than` keeps choices still in use
    return int(found["batch_size"])


_searching = [0.0]  # seconds this process has spent searching batch sizes


def search_seconds() -> float:
    """Seconds this process has spent in batch-size searches so far: a stage subtracts them from its own time, so
    that its rates are those of the work, and reports them apart."""
    return _searching[0]


def _timed(search: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    began = time.perf_counter()
    try:
        return search()
    finally:
        _searching[0] += time.perf_counter() - began


@dataclass(frozen=True)
class ResidentBudget:
    """How many targets evaluation keeps loaded at once: at most ``models``, and it starts a new group once
    their weights reach ``bytes``."""

    models: int
    bytes: int


def resident_budget(device: torch.device, max_resident: int | str = AUTO) -> ResidentBudget:
    """``max_resident`` models, or for ``"auto"`` as many as fit :data:`RESIDENT_SHARE` of the memory a batch may
    take on ``device`` (:func:`memory_budget`); at least one, however large."""
    max_resident = check_max_resident(max_resident)
    if max_resident != AUTO:
        return ResidentBudget(int(max_resident), 1 << 62)
    budget = memory_budget(device)
    return ResidentBudget(1 << 30, max(1, int(budget * RESIDENT_SHARE)) if budget is not None else UNKNOWN_MEMORY_BYTES)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers: what keeping it resident costs before any batch."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


class ResidentModels:
    """Models loaded on first use and kept while they fit ``budget``; the least recently used leave first.

    Parameters
    ----------
    load : callable
        Makes the model of a spec.
    budget : ResidentBudget
        At most ``budget.models`` models, and no more once their weights reach ``budget.bytes``
        (:func:`resident_budget`); the model just asked for always stays.
    """

    def __init__(self, load: Callable[[str], SimModel], budget: ResidentBudget) -> None:
        self.budget = budget
        self.loads = 0
        """Models loaded so far: more than the specs asked for when the budget made some leave."""
        self._load = load
        self._held: OrderedDict[str, tuple[SimModel, int]] = OrderedDict()

    def __call__(self, spec: str) -> SimModel:
        if spec in self._held:
            self._held.move_to_end(spec)
            return self._held[spec][0]
        model = self._load(spec)
        self.loads += 1
        self._held[spec] = (model, weight_bytes(model))
        while len(self._held) > 1 and (len(self._held) > self.budget.models or self.held_bytes > self.budget.bytes):
            self._held.popitem(last=False)
        return model

    @property
    def held_bytes(self) -> int:
        """Bytes of the weights of the models held now."""
        return sum(size for _, size in self._held.values())


def _trial_on(
    model: SimModel, purpose: Purpose, image_shape: tuple[int, ...], precision: str
) -> Callable[[int], Trial]:
    device = model.device

    def trial(size: int) -> Trial:
        images = torch.zeros((size, *image_shape), dtype=torch.uint8, device=device)
        labels = torch.zeros(size, dtype=torch.long, device=device)

        def step() -> None:
            # model.forward, not model(): a compiled model would compile anew for every size tried.
            with precision_context(device, precision):
                if purpose == "attack":
                    x = (images.float() / 255.0).requires_grad_(True)
                    loss = F.cross_entropy(model.forward(x), labels, reduction="sum")
                    torch.autograd.grad(loss, x)
                else:
                    with torch.inference_mode():
                        model.forward(images.float().div_(255.0))
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        began = time.perf_counter()
        try:
            peak = peak_memory(device, step)  # also the warm-up: first calls at a size allocate and pick kernels
            # The fastest of several runs: the first ones at a new size still grow the allocator's pools,
            # and a busy machine only ever adds time.
            times: list[float] = []
            while len(times) < _MIN_TIMED_RUNS or sum(times) < _MIN_TIMED_SECONDS:
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()  # what the failed batch reserved is not counted as free by the next search
            raise OutOfMemory from None
        return Trial(min(times), peak, time.perf_counter() - began)

    return trial


def _peak_measurable(device: torch.device) -> bool:
    return device.type == "cuda" or (device.type == "cpu" and os.access(_CLEAR_REFS, os.W_OK))


def peak_memory(device: torch.device, run: Callable[[], None]) -> int | None:
    """Bytes above the memory in use before ``run()`` at its peak, or None where it cannot be measured."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        return torch.cuda.max_memory_allocated(device) - before
    if not _peak_measurable(device):
        run()
        return None
    # Linux keeps the process's peak resident memory (VmHWM) and resets it on request; memory the C allocator
    # kept from earlier batches is handed back first, or reusing it would hide part of this peak.
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    _CLEAR_REFS.write_text("5")
    before = _proc_bytes(_STATUS, "VmRSS") or 0
    run()
    return max((_proc_bytes(_STATUS, "VmHWM") or 0) - before, 0)


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
_MEMINFO = Path("/proc/meminfo")
_LIBC = (
    ctypes.CDLL(ctypes.util.find_library("c"))
    if platform.system() == "Linux" and ctypes.util.find_library("c")
    else None
)
if _LIBC is not None and not hasattr(_LIBC, "malloc_trim"):  # a C library other than glibc (musl)
    _LIBC = None


def _proc_bytes(path: Path, field: str) -> int | None:
    """A ``FIELD:  N kB`` line of a /proc file in bytes, None where the file or the line is missing."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", path.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def memory_budget(device: torch.device) -> int | None:
    """Bytes a batch may take on ``device``: a share of what is free there, or None where unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Memory torch holds in its cache but no tensor uses is free to this process too.
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free * MEMORY_SHARE["cuda"])
    free = _host_memory_available()
    if free is None:
        return None
    # Processes that share the machine (Ray tasks given --cpus-per-task) share its memory as they share its cores.
    return int(free * MEMORY_SHARE["cpu"] * min(1.0, torch.get_num_threads() / usable_cores()))


def _host_memory_available() -> int | None:
    """MemAvailable, or less where a cgroup (a container's limit) allows less; None off Linux.

    Read from /proc and /sys directly: the peak it is compared with can only be measured on Linux anyway.
    """
    available = _proc_bytes(_MEMINFO, "MemAvailable")
    if available is None:
        return None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit, usage = Path(limit_file).read_text().strip(), int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit():
            available = min(available, max(int(limit) - usage, 0))
        break
    return available


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"{properties.name} {properties.total_memory} torch {torch.__version__}"
    return f"{platform.machine()} {_cpu_model()} {torch.get_num_threads()} threads torch {torch.__version__}"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor()
