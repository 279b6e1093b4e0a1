"""A real network that misbehaves once, saved as a ``file:`` model, to inject faults into real runs.

The first forward pass on real data (not the card tracer's meta tensors) of at least
``min_batch`` images claims a marker file, atomically so only one process across the
cluster misbehaves, writes its Ray node id there, and then raises, kills its own process
or stalls. Every later forward pass, in any process, is the wrapped network's. With the
default ``min_batch`` of 3 the fault passes over the run's preflight check (2 images) and
the one-image pass that finds the output width, and strikes in the attack stage, provided the
run's batches hold that many images: a run that uses it fixes ``batch_size``, since the timed
search of ``auto`` may choose batches of 1 or 2 on a busy machine, and the fault would then never fire.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn

MODES = ("raise", "exit", "stall")


class Flaky(nn.Module):
    def __init__(self, net: nn.Module, marker: Path, mode: str, min_batch: int = 3) -> None:
        super().__init__()
        assert mode in MODES
        self.net = net
        self.marker = str(marker)
        self.mode = mode
        self.min_batch = min_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta" and len(x) >= self.min_batch and self._claim():
            if self.mode == "raise":
                raise RuntimeError("injected fault: this forward pass fails once")
            if self.mode == "exit":
                os._exit(1)
            time.sleep(600)
        return self.net(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"  # in the fingerprint: two flaky models never share cache entries

    def _claim(self) -> bool:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(_node_id())
        return True


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except ImportError:
        return ""


def save_flaky(net: nn.Module, folder: Path, mode: str, min_batch: int = 3) -> tuple[str, Path]:
    """A ``file:`` spec of ``net`` wrapped to fail once in ``mode``, and its marker file (absent: armed)."""
    marker = folder / f"{mode}.fired"
    path = folder / f"flaky-{mode}.pt"
    torch.save(Flaky(net, marker, mode, min_batch), path)
    return f"file:{path},input_size=1:32:32,mean=0.5,std=0.5,name=flaky-{mode}", marker
