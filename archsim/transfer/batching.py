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


@dataclass(frozen=True)
class Trial:
    """One batch size tried: seconds per batch, and the peak memory it took (None where unmeasured)."""

    seconds: float
    peak_bytes: int | None


class OutOfMemory(Exception):
    """The device could not hold the batch."""


def search_batch_size(
    trial: Callable[[int], Trial],
    limit: int,
    budget: int | None,
    min_gain: float = MIN_GAIN,
    extra_bytes_per_image: int = 0,
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

    Returns
    -------
    int
        The smallest batch size that no larger one tried beat by ``min_gain``. The
        growth stops at the first size that does not fit, would not fit by the
        memory measured so far, or after two sizes in a row without such a gain.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    sizes = [1 << k for k in range(limit.bit_length()) if 1 << k < limit] + [limit]
    best, best_rate, misses = 0, 0.0, 0
    measured: list[tuple[int, int]] = []  # (batch, peak bytes)
    for size in sizes:
        if budget is not None and measured and _predicted_peak(measured, size, extra_bytes_per_image) > budget:
            break
        try:
            result = trial(size)
        except OutOfMemory:
            break
        if result.peak_bytes is not None:
            if budget is not None and result.peak_bytes + extra_bytes_per_image * size > budget:
                break
            measured.append((size, result.peak_bytes))
        rate = size / result.seconds
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
) -> int:
    """``batch_size`` if a number; for ``"auto"`` the size searched on ``model`` (cached in ``store``).

    ``purpose`` is ``"attack"`` (forward and input gradient) or ``"evaluate"``
    (forward under inference mode) on uint8 images of ``image_shape`` [C, H, W].
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
        return {"batch_size": np.array(search_batch_size(trial, limit, budget, extra_bytes_per_image=state_bytes))}

    if store is None:
        return int(search()["batch_size"])
    # The architecture, not the weights: speed and memory do not depend on the values of the weights.
    # The layout changes which sizes run fastest; named only when channels-last, so earlier contiguous choices stay
    # valid.
    layout = ("channels-last",) if model.channels_last else ()
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
    )
    # Read and written around the store's counters and without a lock: a batch size is a way to compute results,
    # not one of them, and two processes that search at once both find a valid size.
    found = store.get("batch", key)
    if found is None:
        found = search()
        store.put("batch", key, found)
    else:
        store.touch("batch", key)  # so `cache prune --older-than` keeps choices still in use
    return int(found["batch_size"])


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
        return Trial(min(times), peak)

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
