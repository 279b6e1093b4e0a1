"""Batch sizes measured on the model itself: as large as pays, within the device's memory.

``--batch-size auto`` times the attack step (forward and input gradient) or the
evaluation forward of a model at growing batch sizes and keeps the smallest batch
that no larger one beats by 5 %, never passing a share of the memory left on the
device. The best batch differs by model and device, so no fixed number serves:
on a 2-core CPU ResNet-50 at 224 px evaluates 22 images/s at 4 and 11 at 128
(large activations leave the caches and the allocator's reused memory), while the
embedded zoo's small models run up to 1.3x faster at 256-360 than at 128
(BENCHMARKS.md); on a GPU throughput grows with the batch until the device is
busy, so there the search fills memory as far as that pays.

The search is paid for by the work it sizes, so it is bounded by it. Where the caller
says how much work the batch serves (``work``: images times passes), the trials may
take at most :data:`SEARCH_SHARE` of that work's time at the best rate measured. A
trial runs only if the search stays within that share whatever it finds: its batch
takes between the last batch's time (the rate then grows with the batch, and the
work's time shrinks) and that time scaled by the sizes (the rate stays). The sizes
grow by doubling, or jump (at most :data:`MAX_JUMP` times) where the last two trials
show a fixed cost per call that a larger batch would spread (time ~ a + c x batch:
the next size is where a is under :data:`FIXED_SHARE` of the batch's time), as far
as the share allows. Work too small to pay for even one trial (4 images through a
large network) gets no trial: its batch is the largest that the model check's
measured memory (:func:`record_check`, 2 images through the attack step) predicts to
fit, up to the work itself. Evaluation's search starts at twice the attack's choice for
the same model (:data:`EVALUATION_START`), and a work too small for a trial there runs at
that size: the small sizes a forward alone never prefers are not paid for.

A choice is cached per architecture, input, precision, device and order of magnitude
of the work, so each is searched once per machine. Results do not depend on the
batch size beyond the order of floating-point operations (random starts are drawn
per image).
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
from archsim.params import AUTO
from archsim.specs import check_batch_size, check_max_resident

MIN_GAIN = 0.05
"""A larger batch must be this much faster (images per second) to be preferred."""
SEARCH_SHARE = 0.03
"""Share of the work's time (at the best rate measured) that a search's trials may take in all: 3 %, under the 5 %
target, as the last trial's cost is a prediction."""
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
MISSES = 3
"""Sizes in a row without a gain that end a search: three, as on this VM's CPU ConvNeXt-T attacks at 4.3 images/s at
1, 2.0 at 2 and 2.3 at 4, and at 6.0 at 8 (BENCHMARKS.md)."""
MAX_JUMP = 8
"""A search's next size is at most this many times its last."""
FIXED_SHARE = 0.05
"""Where a batch's time shows a fixed part per call, the search jumps to the size at which that part is this share of
the batch's time (as :data:`MIN_GAIN`: a larger batch could not gain more)."""
TRIAL_STEPS = 2
"""Steps of the work in one trial: the first at a size (which also picks kernels and grows the allocator's pools)
and one more; the faster counts. What a trial costs where its own wall time is not given."""
_MIN_TIMED_SECONDS = 0.01
"""A trial of a model this fast runs more steps, up to this many seconds, for a stable minimum."""


@dataclass(frozen=True)
class Trial:
    """One batch size tried: seconds per batch, the peak memory it took (None where unmeasured), and the wall
    seconds the whole trial took (None: :data:`TRIAL_STEPS` batches)."""

    seconds: float
    peak_bytes: int | None
    cost: float | None = None

    @property
    def wall_seconds(self) -> float:
        return self.cost if self.cost is not None else TRIAL_STEPS * self.seconds


class OutOfMemory(Exception):
    """The device could not hold the batch."""


def search_batch_size(
    trial: Callable[[int], Trial],
    limit: int,
    budget: int | None,
    min_gain: float = MIN_GAIN,
    extra_bytes_per_image: int = 0,
    work: int | None = None,
    checked: tuple[int, Trial] | None = None,
    start: int = 1,
) -> int:
    """The batch size to use, from trials at ``start`` (1), twice that and larger sizes up to ``limit`` images.

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
        Images (times passes) the chosen batch size will serve. The trials then take at
        most :data:`SEARCH_SHARE` of the time that work takes at the best rate measured
        so far; a trial predicted to pass that share is not run. None: no such limit.
    checked : (int, Trial), optional
        A batch size already run (the model check's) with its peak memory: it predicts
        memory before any trial, and sizes the batch where the work pays for no trial.
    start : int
        The first size tried, where something already measured says smaller ones do not
        pay (:func:`batch_size_for`: evaluation starts from twice the attack's choice).

    Returns
    -------
    int
        The smallest batch size that no larger one tried beat by ``min_gain``. The
        growth stops at the first size that does not fit, would not fit by the
        memory measured so far, after :data:`MISSES` sizes in a row without such a gain, or
        where the next trial would pass the work's share. Where no trial was
        affordable or ``start`` does not fit: the largest size up to ``start`` (up to
        ``limit`` from 1) that ``checked`` predicts to fit.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    start = max(1, min(start, limit))
    best, best_rate, misses, spent = 0, 0.0, 0, 0.0
    tried: list[tuple[int, Trial]] = []
    measured: list[tuple[int, int]] = []  # (batch, peak bytes)
    if checked is not None and checked[1].peak_bytes is not None:
        measured.append((checked[0], checked[1].peak_bytes))
    size: int | None = start
    while size is not None:
        if budget is not None and measured and _predicted_peak(measured, size, extra_bytes_per_image) > budget:
            break
        if work is not None and not _affordable(size, tried, spent, work):
            break
        try:
            result = trial(size)
        except OutOfMemory:
            result = None
        if result is not None:
            spent += result.wall_seconds
        if result is None or (
            budget is not None
            and result.peak_bytes is not None
            and result.peak_bytes + extra_bytes_per_image * size > budget
        ):
            # Too large: after a jump, the sizes skipped below it are still open.
            if size == 1:
                break
            limit = 1 << ((size - 1).bit_length() - 1)
            if not tried:  # the start did not fit: from 1 below it
                start = size = 1
                continue
            size = _next_size(tried, limit, budget, measured, extra_bytes_per_image, spent, work)
            continue
        if result.peak_bytes is not None:
            # One point per size (a start at the check's size measures it again): the larger peak, for a line.
            earlier = [peak for b, peak in measured if b == size]
            measured = [(b, peak) for b, peak in measured if b != size] + [(size, max([result.peak_bytes, *earlier]))]
        tried.append((size, result))
        rate = size / result.seconds
        if rate > best_rate * (1 + min_gain):
            best, best_rate, misses = size, rate, 0
        else:
            misses += 1
            if misses == MISSES:
                break
        size = _next_size(tried, limit, budget, measured, extra_bytes_per_image, spent, work)
    if best:
        return best
    if not tried and size == start and (start > 1 or (work is not None and not _affordable(1, tried, spent, work))):
        # The work pays for no trial, or the start would not fit memory.
        return _largest_fitting(start if start > 1 else limit, budget, measured, extra_bytes_per_image)
    raise ArchsimError("not even one image fits in the device's free memory; free memory or use a smaller model")


def _affordable(size: int, tried: list[tuple[int, Trial]], spent: float, work: int) -> bool:
    """Whether a trial at ``size`` keeps the search within :data:`SEARCH_SHARE` of the work, whatever it finds."""
    allowed = SEARCH_SHARE * work
    if not tried:
        # Nothing measured: in units of one image's step, the trial costs TRIAL_STEPS x size and the work ``work``.
        return TRIAL_STEPS * size <= allowed
    last_size, last = tried[-1]
    overhead = last.wall_seconds / last.seconds  # a trial's wall time per second of its batch
    best = min(t.seconds / s for s, t in tried)
    # The new batch takes between the last one's time (a flat curve: its rate then grows in proportion, and the work's
    # time shrinks with it) and that time scaled by the sizes (the rate stays): the search must fit either way.
    return all(
        spent + overhead * seconds <= allowed * min(best, seconds / size)
        for seconds in (last.seconds, last.seconds * size / last_size)
    )


def _next_size(
    tried: list[tuple[int, Trial]],
    limit: int,
    budget: int | None,
    measured: list[tuple[int, int]],
    extra_bytes_per_image: int,
    spent: float,
    work: int | None,
) -> int | None:
    """The next size to try (None: the limit is reached): twice the last, or further where the last two trials show
    a fixed cost per call, to the largest power of two on the way that fits memory and the work's share."""
    last = tried[-1][0]
    if last >= limit:
        return None
    target = 2 * last
    ceiling = MAX_JUMP * last  # memory and time are extrapolated from the last two sizes: not too far
    if len(tried) >= 2:
        (s0, t0), (s1, t1) = tried[-2], tried[-1]
        per_image = (t1.seconds - t0.seconds) / (s1 - s0)
        fixed = t1.seconds - per_image * s1
        # time(batch) = fixed + per_image x batch: the rate is near its limit once the fixed part is under
        # FIXED_SHARE of the batch's time. No per-image time measured yet (a flat curve): as far as allowed.
        target = (
            limit if per_image <= 0 else max(target, math.ceil(fixed * (1 - FIXED_SHARE) / (FIXED_SHARE * per_image)))
        )
    target = min(target, ceiling)
    candidates = [1 << k for k in range(last.bit_length(), limit.bit_length()) if 1 << k <= min(target, limit)]
    if limit <= target and limit not in candidates:
        candidates.append(limit)
    candidates = candidates or [min(2 * last, limit)]
    for size in reversed(candidates):
        fits = budget is None or not measured or _predicted_peak(measured, size, extra_bytes_per_image) <= budget
        if fits and (work is None or _affordable(size, tried, spent, work)):
            return size
    return candidates[0]  # the next doubling, which the caller's own checks then turn down


def _largest_fitting(
    limit: int, budget: int | None, measured: list[tuple[int, int]], extra_bytes_per_image: int
) -> int:
    """The largest size up to ``limit`` the memory measured predicts to fit (``limit`` where nothing is known)."""
    if budget is None or not measured:
        return limit
    per_image = max(peak / size for size, peak in measured) + extra_bytes_per_image  # linear from none: pessimistic
    return max(1, min(limit, int(budget // per_image)))


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
    attack steps); the search's trials then take at most :data:`SEARCH_SHARE` of that
    work's time (:func:`search_batch_size`), the batch is at most the work, and the
    choice is kept per order of magnitude of ``work``. The model check's memory
    (:func:`record_check`) predicts what fits before any trial; where the store has
    none, one step at 2 images measures it. Evaluation's search starts at twice the
    size the attack's search chose for the same model (:data:`EVALUATION_START`), where
    the store has that choice.
    """
    batch_size = check_batch_size(batch_size)
    if batch_size != AUTO:
        return batch_size
    device = model.device
    budget = memory_budget(device) if _peak_measurable(device) else None
    measurable = budget is not None
    limit = max(1, min(n_images, MAX_BATCH_SIZE if measurable else UNMEASURED_LIMIT, work or n_images))
    state_bytes = ATTACK_STATE_COPIES * 4 * math.prod(image_shape) if purpose == "attack" else 0

    def search() -> dict[str, np.ndarray]:
        trial = step_trial(model, purpose, tuple(image_shape), precision)
        checked = _checked(model, image_shape, precision, store) if work is not None else None
        if work is not None and checked is None:
            size = min(CHECK_IMAGES, limit)
            checked = (size, trial(size))
        attacked = store.get("batch", _attack_choice_key(model, image_shape, precision)) if store else None
        start = EVALUATION_START * int(attacked["attack_choice"]) if purpose == "evaluate" and attacked else 1
        chosen = search_batch_size(
            trial, limit, budget, extra_bytes_per_image=state_bytes, work=work, checked=checked, start=start
        )
        if purpose == "attack" and store is not None:
            store.put("batch", _attack_choice_key(model, image_shape, precision), {"attack_choice": np.array(chosen)})
        return {"batch_size": np.array(chosen)}

    if store is None:
        return int(_timed(search)["batch_size"])
    # The architecture, not the weights: speed and memory do not depend on the values of the weights.
    # The layout changes which sizes run fastest; named only when channels-last, so earlier contiguous choices stay
    # valid.
    layout = ("channels-last",) if model.channels_last else ()
    # A search for a larger job may go further: a larger batch saves more on it.
    scale = () if work is None else ({"work": int(math.log10(max(work, 1))), "rule": SEARCH_RULE},)
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
        if purpose == "attack":
            store.touch("batch", _attack_choice_key(model, image_shape, precision))
    return int(found["batch_size"])


SEARCH_RULE = 3
"""Raised when the search's rule changes, so that choices made by an earlier rule are searched again."""
EVALUATION_START = 2
"""Evaluation's search starts at this multiple of the attack's choice for the model: a forward alone keeps no
activations for a backward, so on every curve measured its best batch is at least twice the attack step's
(224 px on a 2-core CPU: ResNet-50 4 -> 16, ViT-B/16 8 -> 16, ConvNeXt-T 8 -> 32, BENCHMARKS.md), and the
smaller trials would spend the share of a small evaluation before reaching it."""
CHECK_IMAGES = 2
"""Images the model check runs through the attack step (:func:`record_check`)."""


def record_check(
    model: SimModel,
    images: int,
    image_shape: tuple[int, ...],
    precision: str,
    run: Callable[[], None],
    store: CacheStore,
) -> None:
    """Run ``run`` (the model check's attack step on ``images`` images of ``image_shape``) and keep its peak memory
    and time in ``store``, where :func:`batch_size_for` reads them as a first measurement."""
    began = time.perf_counter()
    peak = peak_memory(model.device, run)
    seconds = time.perf_counter() - began
    if peak is not None:
        store.put(
            "batch",
            _check_key(model, image_shape, precision),
            {"images": np.array(images), "peak": np.array(peak), "seconds": np.array(seconds)},
        )


def _checked(
    model: SimModel, image_shape: tuple[int, ...], precision: str, store: CacheStore | None
) -> tuple[int, Trial] | None:
    found = store.get("batch", _check_key(model, image_shape, precision)) if store is not None else None
    if found is None:
        return None
    return int(found["images"]), Trial(float(found["seconds"]), int(found["peak"]))


def _attack_choice_key(model: SimModel, image_shape: tuple[int, ...], precision: str) -> str:
    # The attack's last choice for the architecture, whatever its work: where evaluation's search starts.
    return digest(
        "attack choice", model.architecture_id, list(image_shape), precision, _device_description(model.device)
    )


def _check_key(model: SimModel, image_shape: tuple[int, ...], precision: str) -> str:
    # The attack step's memory bounds evaluation's too (no backward), whatever the layout.
    return digest(
        "checked step", model.architecture_id, list(image_shape), precision, _device_description(model.device)
    )


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


def step_trial(
    model: SimModel, purpose: Purpose, image_shape: tuple[int, ...], precision: str
) -> Callable[[int], Trial]:
    """A trial of ``model``'s attack step or evaluation forward on zero images of ``image_shape``, for
    :func:`search_batch_size` (and benchmarks that time the same step)."""
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
            # The first step at a size also measures the peak, allocates and picks kernels; it is timed too, and the
            # faster of it and the next counts (a busy machine only ever adds time). A fast model runs a few more
            # steps, which cost it nothing, for a stable minimum.
            peak = peak_memory(device, step)
            times = [time.perf_counter() - began]
            while len(times) < TRIAL_STEPS or sum(times) < _MIN_TIMED_SECONDS:
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
