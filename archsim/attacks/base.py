"""The attack base class: one call shape for every attack.

Attacks run in canonical pixel space: they take uint8 images, work on
``images / 255`` through the model's own differentiable preprocessing, and
return uint8 images rounded to the grid and kept inside the L-infinity ball of
radius ``eps`` and inside [0, 255].
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from archsim.errors import ParameterError
from archsim.hardware import usable_cores
from archsim.progress import steps
from archsim.specs import check_eps


class Attack(ABC):
    """An untargeted L-infinity attack.

    Parameters
    ----------
    eps : float
        Radius of the L-infinity ball in [0, 1] pixel units.
    """

    name: str = ""
    revision: int = 1
    """Raised when an attack's algorithm changes for the same settings, so results made before are not reused."""

    def __init__(self, eps: float) -> None:
        self.eps = check_eps(eps)

    def config(self) -> dict[str, Any]:
        """Every setting that changes the result; enters cache keys and config.json."""
        return {"name": self.name, "eps": self.eps}

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the attack's result depends on, which it therefore always uses; None: its result is the
        same at any batch size (archsim's attacks draw their random numbers per image)."""
        return None

    @property
    def passes(self) -> int:
        """Forward and backward passes the attack runs per image (steps, times the samples around each step)."""
        config = self.config()
        return int(config.get("steps", 1)) * (1 + int(config.get("samples", 0)))

    @abstractmethod
    def perturb(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: "NoiseSource | None"
    ) -> torch.Tensor:
        """Float adversarial images in [0, 1] for float images ``x`` and labels ``y``.

        ``noise.draw(*key)`` gives uniform [-1, 1) draws of ``x``'s shape, the same
        for the same image and key whatever the batch (random starts, sampling).
        """

    @property
    def uses_noise(self) -> bool:
        return False

    @staticmethod
    def input_gradient(
        model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-image cross-entropy, its gradient w.r.t. ``x``, logits) in one forward and backward.

        The loss is summed, so each image's gradient is independent of the batch size.
        """
        x = x.detach().requires_grad_(True)
        logits = model(x)
        losses = F.cross_entropy(logits, y, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), x)
        return losses.detach(), grad, logits.detach()

    def __call__(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        seed: int = 0,
        batch_size: int = 128,
        desc: str | None = None,
    ) -> torch.Tensor:
        """Adversarial uint8 images for uint8 ``images`` [N, C, H, W] (``batch_size`` at a time, unless the attack
        keeps its own: :attr:`fixed_batch`)."""
        batch_size = self.fixed_batch or batch_size
        out = torch.empty_like(images)
        batches = (images[start : start + batch_size] for start in range(0, len(images), batch_size))
        start = 0
        for adv in self.stream(model, batches, labels, seed, batch_size, desc):
            out[start : start + len(adv)] = adv
            start += len(adv)
        return out

    def stream(
        self,
        model: torch.nn.Module,
        batches: Iterable[torch.Tensor],
        labels: torch.Tensor,
        seed: int = 0,
        batch_size: int = 128,
        desc: str | None = None,
    ) -> Iterator[torch.Tensor]:
        """Adversarial uint8 batches, one for each uint8 batch of ``batches`` as it comes.

        ``batches`` are the images in order, ``batch_size`` at a time (the last may be
        shorter), ``labels`` all of their labels: only one batch is in memory at a time.
        """
        device = next((b.device for b in model.buffers()), torch.device("cpu"))
        starts = range(0, len(labels), batch_size)
        # On a GPU the random starts are drawn on CPU threads, the next batch's while the device attacks this one:
        # drawn in line on one thread the first batch's start idled an H100 for 183 ms (ResNet-50, 256 images).
        # On the CPU threads would only compete with the compute threads (measured 5-10 % slower), so there the
        # start is drawn in line.
        with ThreadPoolExecutor(max_workers=noise_workers()) as prefetcher:
            ahead = prefetcher if device.type == "cuda" else None
            noises: dict[int, NoiseSource] = {}
            pending: Callable[[], torch.Tensor] | None = None
            for start, images in zip(
                steps(starts, desc or f"attack {self.name}", len(starts), per_step=batch_size), batches, strict=True
            ):
                stop = min(start + batch_size, len(labels))
                if len(images) != stop - start:
                    raise ValueError(f"a batch of {len(images)} images where images {start}..{stop - 1} were due")
                if self.uses_noise:
                    for first in (start, start + batch_size):  # this batch's (if not drawn ahead) and the next one's
                        if first < len(labels) and first not in noises:
                            indices = range(first, min(first + batch_size, len(labels)))
                            noises[first] = NoiseSource(seed, indices, images.shape[1:], device, ahead)
                            noises[first].prefetch()
                clean = to_device(images, device)
                # clone(): labels made under inference_mode cannot enter autograd otherwise.
                adv = self.perturb(
                    model, clean.float() / 255.0, labels[start:stop].to(device).clone(), noises.pop(start, None)
                )
                # Each batch is handed back one batch late, so the device attacks the next batch while this one is
                # copied back and stored: waited for in line, rounding and copying back took 25-30 ms a batch on an
                # H100.
                copied = copy_to_host(to_uint8(adv, clean, self.eps))
                if pending is not None:
                    yield pending()
                pending = copied
            if pending is not None:
                yield pending()


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``batch`` on ``device``; through page-locked memory on CUDA, so the copy overlaps the queued work."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def copy_to_host(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Start copying ``tensor`` to the CPU; calling the result waits for this copy alone and returns the copy.

    On CUDA the copy goes into page-locked memory behind the work queued so far, so
    work queued after it keeps the device busy while the host waits.
    """
    if tensor.device.type != "cuda":
        return lambda: tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    copied = torch.cuda.Event()
    # the copy's stream, also where the tensor is not on the current GPU
    copied.record(torch.cuda.current_stream(tensor.device))

    def wait() -> torch.Tensor:
        copied.synchronize()
        return host

    return wait


def noise_workers() -> int:
    """Threads drawing random starts on a GPU machine: all cores but the one feeding the device, at most 8."""
    return max(1, min(8, usable_cores() - 1))


def check_count(name: str, value: int) -> int:
    """A positive whole number; ``name`` is the option's Python name (the CLI shows its flag)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParameterError(name, f"must be a positive whole number, got {value}")
    return value


def check_steps(steps: int) -> int:
    return check_count("steps", steps)


def check_positive(name: str, value: float, upper: float | None = None) -> float:
    """A finite number in (0, upper]; ``name`` is the option's Python name (the CLI shows its flag)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
        or (upper is not None and value > upper)
    ):
        bound = f"(0, {upper:g}]" if upper is not None else "(0, inf)"
        raise ParameterError(name, f"must lie in {bound}, got {value}")
    return float(value)


def project(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Back into the eps-ball around ``x`` and into [0, 1]."""
    return (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)


def start_noise(seed: int, indices: range, shape: torch.Size, key: tuple[int, ...] = ()) -> torch.Tensor:
    """Uniform [-1, 1) noise drawn per image from (seed, image index, *key).

    Per-image streams keep the result independent of the batch size.
    """
    return uniform_into(torch.empty((len(indices), *shape)), seed, indices, key) * 2 - 1


def uniform_into(out: torch.Tensor, seed: int, indices: range, key: tuple[int, ...]) -> torch.Tensor:
    """Fill the float32 CPU tensor ``out`` [len(indices), ...] with the per-image uniform [0, 1) draws."""
    draws = out.numpy()
    for row, i in enumerate(indices):
        np.random.default_rng([seed, i, *key]).random(dtype=np.float32, out=draws[row])
    return out


class NoiseSource:
    """Seeded per-image noise for one batch: ``draw(*key)`` is fixed by (seed, image index, key).

    ``prefetch()`` draws the key-less noise (the random start) on ``executor`` ahead of
    its use, in parts of a few images that the executor's threads draw at once (numpy
    releases the GIL while it fills); the values are the same either way.
    """

    PART = 16
    """Images per task drawn ahead."""

    def __init__(
        self,
        seed: int,
        indices: range,
        shape: torch.Size,
        device: torch.device | str = "cpu",
        executor: Executor | None = None,
    ) -> None:
        self.seed, self.indices, self.shape, self.device, self.executor = (
            seed,
            indices,
            tuple(shape),
            torch.device(device),
            executor,
        )
        self._ahead: tuple[torch.Tensor, list[Future]] | None = None

    def prefetch(self) -> None:
        if self.executor is not None and self._ahead is None:
            buffer = self._buffer()
            parts = [
                self.executor.submit(
                    uniform_into,
                    buffer[first : first + self.PART],
                    self.seed,
                    self.indices[first : first + self.PART],
                    (),
                )
                for first in range(0, len(self.indices), self.PART)
            ]
            self._ahead = (buffer, parts)

    def draw(self, *key: int) -> torch.Tensor:
        if not key and self._ahead is not None:
            (uniform, parts), self._ahead = self._ahead, None
            for part in parts:
                part.result()
        else:
            uniform = uniform_into(self._buffer(), self.seed, self.indices, key)
        # The affine map runs on the device: one pass there instead of two over CPU memory.
        return uniform.to(self.device, non_blocking=True) * 2 - 1

    def _buffer(self) -> torch.Tensor:
        return torch.empty((len(self.indices), *self.shape), pin_memory=self.device.type == "cuda")


def to_uint8(adv: torch.Tensor, clean: torch.Tensor, eps: float) -> torch.Tensor:
    """Round float images to the uint8 grid and project onto the integer eps-ball: the whole levels of 1/255 inside
    ``eps`` (floored, so the image stays within the radius stated; a run rounds its eps to whole levels first, and
    says so: :func:`archsim.specs.whole_levels`)."""
    radius = math.floor(eps * 255 + 1e-6)
    rounded = torch.round(adv.detach() * 255)
    low = (clean.to(torch.int16) - radius).clamp(min=0)
    high = (clean.to(torch.int16) + radius).clamp(max=255)
    return torch.minimum(torch.maximum(rounded, low), high).to(torch.uint8)
