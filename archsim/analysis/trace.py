"""One forward pass recorded as an ordered list of module calls and tensor operations.

Card extraction reads architecture facts off what a network *does* (which
operations run, on which shapes, inside which module) rather than off its class
name, so it works for any ``nn.Module``. The pass runs on the ``meta`` device
where the network allows it (no memory, no arithmetic), else on the network's
own device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Batch size of the traced pass: 2 tells a per-sample tensor (leading dim 2) from
# a parameter reshaped to (1, ...), as in weight standardisation.
TRACE_BATCH = 2


@dataclass
class Call:
    """One call of one module: where it sits in the event order and its shapes."""

    path: str
    module: nn.Module
    start: int
    end: int = -1
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None
    in_strides: tuple[int, ...] | None = None

    def inside(self, path: str) -> bool:
        return path == "" or self.path == path or self.path.startswith(path + ".")


@dataclass
class Op:
    """One aten operation: its name, the module stack when it ran, tensor shapes."""

    index: int
    name: str
    stack: tuple[str, ...]
    in_shapes: list[tuple[int, ...]]
    out_shapes: list[tuple[int, ...]]


@dataclass
class Trace:
    """Everything one forward pass did, in execution order."""

    net: nn.Module
    input_shape: tuple[int, ...]
    calls: list[Call] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    output_shape: tuple[int, ...] | None = None

    def calls_of(self, kind: type) -> list[Call]:
        return [c for c in self.calls if isinstance(c.module, kind)]

    def ops_within(self, call: Call) -> list[Op]:
        return [op for op in self.ops if call.start < op.index < call.end]

    @property
    def modules(self) -> dict[str, nn.Module]:
        return dict(self.net.named_modules())


class _Recorder(TorchDispatchMode):
    def __init__(self, trace: Trace, stack: list[str], counter: list[int]) -> None:
        super().__init__()
        self.trace, self.stack, self.counter = trace, stack, counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.counter[0] += 1
        self.trace.ops.append(
            Op(
                self.counter[0],
                func.overloadpacket.__name__,
                tuple(self.stack),
                [tuple(t.shape) for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)],
                [tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)],
            )
        )
        return out


def _first_tensor(value) -> torch.Tensor | None:
    return next((t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)), None)


def _first_shape(value) -> tuple[int, ...] | None:
    tensor = _first_tensor(value)
    return tuple(tensor.shape) if tensor is not None else None


def trace_forward(net: nn.Module, input_size: tuple[int, int, int]) -> Trace:
    """Record one eval-mode forward pass of ``net`` on a zero batch of ``input_size`` (C, H, W)."""
    shape = (TRACE_BATCH, *input_size)
    try:
        return _run(net, shape, torch.device("meta"))
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        # Some forwards read tensor values (``.item()``, data-dependent shapes); run those for real.
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        return _run(net, shape, device)


def _run(net: nn.Module, shape: tuple[int, ...], device: torch.device) -> Trace:
    trace = Trace(net, shape)
    names = {id(m): n for n, m in net.named_modules()}
    stack: list[str] = []
    counter = [0]
    open_calls: list[Call] = []

    def before(module, args):
        counter[0] += 1
        first = _first_tensor(args)
        call = Call(
            names.get(id(module), "?"),
            module,
            counter[0],
            in_shape=tuple(first.shape) if first is not None else None,
            in_strides=tuple(first.stride()) if first is not None else None,
        )
        trace.calls.append(call)
        open_calls.append(call)
        stack.append(call.path)

    def after(module, args, output):
        counter[0] += 1
        call = open_calls.pop()
        call.end, call.out_shape = counter[0], _first_shape(output)
        stack.pop()

    handles = [m.register_forward_pre_hook(before) for m in net.modules()]
    handles += [m.register_forward_hook(after) for m in net.modules()]
    was_training = net.training
    net.eval()
    try:
        x = torch.zeros(shape, device=device)
        with torch.no_grad():
            if device.type == "meta":
                state = {k: torch.empty_like(v, device="meta") for k, v in net.state_dict(keep_vars=True).items()}
                with _Recorder(trace, stack, counter):
                    out = torch.func.functional_call(net, state, (x,), strict=False)
            else:
                with _Recorder(trace, stack, counter):
                    out = net(x)
        trace.output_shape = _first_shape(out)
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return trace
