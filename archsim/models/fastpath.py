"""How a frozen model runs fast on its device: mixed precision, memory format, compilation.

Only the precision changes results beyond rounding, so only it enters cache keys;
channels-last and ``torch.compile`` change the order of floating-point operations
the way a different device or batch size does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal

import torch
from torch import nn

from archsim.errors import ParameterError
from archsim.models.wrapper import SimModel
from archsim.params import AUTO, RULES

PRECISIONS = tuple(choice for choice in RULES["precision"].choices if choice != AUTO)
# What a prepared model will mostly do: its layout and batch size are chosen for it.
Purpose = Literal["attack", "evaluate"]


def check_precision(precision: str) -> str:
    """``precision`` (``fp32`` or ``bf16``) if known, else a one-line error; ``auto`` is resolved
    per device by :func:`default_precision`."""
    if precision not in PRECISIONS:
        raise ParameterError("precision", f"unknown {{}} {precision!r}; use {' or '.join(PRECISIONS)}")
    return precision


def default_precision(device: str | torch.device) -> str:
    """The precision ``auto`` means on ``device``: bf16 on CUDA, fp32 elsewhere.

    The rule: the fastest setting whose SAT matrix agrees with an fp32 run at least as
    well as fp32 agrees with itself at another attack seed. Measured on an H100 (the
    embedded zoo, four seeds, BENCHMARKS.md): bf16 against fp32 at the same seed keeps a
    rank correlation of 0.982-0.991 (mean 0.987), fp32 reseeded 0.974-0.984 (mean
    0.979), so bf16's difference from fp32 lies within the attack's own noise, while it
    runs 1.3-3.6x faster on ImageNet-size models (eager; 2.7-5x compiled). On the
    CPU bf16 is slower, so fp32 stays. ``--precision fp32`` reproduces fp32 exactly.
    """
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def precision_context(device: str | torch.device, precision: str) -> AbstractContextManager:
    """Autocast to bfloat16 for ``bf16`` (losses and reductions stay fp32), a no-op for ``fp32``."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def convolutional(model: nn.Module) -> bool:
    """Whether the network (a :class:`SimModel` or any module) has a 2-d convolution, the layers
    whose speed the memory layout changes."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def channels_last_by_default(conv: bool, cuda: bool, precision: str, compile: bool, purpose: Purpose) -> bool:
    """The memory layout :func:`prepare` picks when not told, from measurements (BENCHMARKS.md).

    Only convolutional networks care. On the CPU oneDNN's NHWC kernels made the zoo's
    PGD 1.0-2.0x and its evaluation 1.0-2.8x faster. On an H100 NHWC made eager
    inference of ResNet-50 at 224 px 1.12-1.35x faster (cuDNN; ConvNeXt-T 0.99-1.01x),
    but its eager attack (forward and input gradient) 1.2-1.3x slower in bf16 and fp32
    alike; compiled in bf16, NHWC was the faster layout for the attack (1-5 %).
    Compiled fp32 and compiled inference were not measured apart, so they keep NCHW.
    """
    if not conv:
        return False
    if not cuda:
        return True
    if purpose == "evaluate":
        return not compile
    return compile and precision == "bf16"


def to_channels_last(net: nn.Module) -> None:
    """Store the network's 4-d parameters and buffers (convolution kernels) NHWC, in place.

    ``nn.Module.to(memory_format=torch.channels_last)`` also converts 5-d tensors and
    fails on them ("required rank 4 tensor"): the SAT paper's ``lambda_resnet50ts`` and
    ``lamhalobotnet50ts_256`` hold a 3-d convolution's kernel. Only 4-d tensors have an
    NHWC layout, so only they are converted. Buffers are replaced, not changed in place:
    one cached during a forward pass under inference mode (ConViT's ``rel_indices``) is an
    inference tensor, whose data cannot be set outside that mode.
    """
    for module in net.modules():
        for parameter in module.parameters(recurse=False):
            if parameter.dim() == 4:
                parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and buffer.dim() == 4:
                setattr(module, name, buffer.contiguous(memory_format=torch.channels_last))


def prepare(
    model: SimModel,
    precision: str = "fp32",
    compile: bool = False,
    channels_last: bool | None = None,
    purpose: Purpose = "attack",
) -> SimModel:
    """Ready a loaded model for many batches on its device.

    ``channels_last`` feeds the network NHWC tensors; by default it follows
    :func:`channels_last_by_default` for the model's ``purpose`` (a model that attacks
    also predicts its clean images, a much smaller share of its work).
    ``torch.compile`` fuses the element-wise work around the matrix products; it pays
    back its compile time only over many batches.
    """
    cuda = model.device.type == "cuda"
    if channels_last is None:
        channels_last = channels_last_by_default(convolutional(model), cuda, precision, compile, purpose)
    if channels_last:
        to_channels_last(model.net)
        model.channels_last = True
    if cuda:
        # Fixed shapes batch after batch: let cuDNN time its algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    if compile:
        model.compile()
    return model
