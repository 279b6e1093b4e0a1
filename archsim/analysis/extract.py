"""Model cards read off a network's forward pass (docs/method.md#analysis).

Every component comes from what the network computes — convolution shapes,
normalisation and activation operations, attention (a softmax over a
query x key grid), channel gates (a sigmoid or softmax on a globally pooled
descriptor, multiplied back into the map) — plus the input resolution of the
resolved data config. Names only label what was found (``SEModule`` -> ``SE``);
they never decide whether it is there. The one exception is "NAS": whether an
architecture came from a search is history, not structure, so it is read from
the timm family module the network class lives in.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import pandas as pd
from torch import nn

from archsim.analysis.cards import CARD_COLUMNS, cards_table
from archsim.analysis.trace import TRACE_BATCH, Call, Trace, trace_forward
from archsim.errors import ArchsimError, ParameterError

NOT_APPLICABLE = "~"

# timm family modules whose architectures were found by architecture search
# (EfficientNet, MixNet, FBNet, MnasNet; MobileNetV3; RegNet; ReXNet).
NAS_FAMILIES = ("timm.models.efficientnet", "timm.models.mobilenetv3", "timm.models.regnet", "timm.models.rexnet")

# Paper notation for operation names, and the order the published table lists them in.
_NORM_OPS = {"batch_norm": "BN", "layer_norm": "LN", "group_norm": "GN", "rms_norm": "RMSNorm"}
_NORM_ORDER = ("LN", "BN", "GN", "EvoNorm", "Affine transform", "RMSNorm")
_ACT_OPS = {
    "gelu": "GeLU",
    "relu": "ReLU",
    "leaky_relu": "Leaky ReLU",
    "silu": "SiLU",
    "hardtanh": "ReLU6",
    "hardswish": "HardSwish",
    "mish": "Mish",
    "elu": "ELU",
    "prelu": "PReLU",
    "selu": "SELU",
    "celu": "CELU",
}
_ACT_ORDER = ("GeLU", "ReLU", "Leaky ReLU", "SiLU", "ReLU6", "HardSwish", "Mish", "ELU", "PReLU", "SELU", "CELU")
_GATE_OPS = ("sigmoid", "softmax")  # substrings: hardsigmoid, _softmax, _safe_softmax
_POOL_OPS = {
    "mean": "GAP",
    "sum": "GAP",
    "avg_pool2d": "GAP",
    "_adaptive_avg_pool2d": "GAP",
    "adaptive_avg_pool2d": "GAP",
    "select": "CLS token",
    "slice": "CLS token",
    "amax": "GMP",
    "max": "GMP",
    "max_pool2d_with_indices": "GMP",
    "adaptive_max_pool2d": "GMP",
}
_WINDOW_POOL_OPS = ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d")
# Labels for the attention kinds the published table names; others keep their class name.
_SA_LABELS = {"BottleneckAttn": "BoT", "HaloAttn": "Halo", "LambdaLayer": "Lambda"}
_CW_LABELS = (
    ("EffectiveSE", "ESE"),
    ("Eca", "ECA"),
    ("GlobalContext", "GCA"),
    ("Cbam", "CBAM"),
    ("SqueezeExcit", "SE"),
    ("SE", "SE"),
)
# A stem container holds at most this share of the network's parameterised layers.
_STEM_SHARE = 0.2


def _per_sample(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape[1:]:
        n *= d
    return n


def _positions(shape: tuple[int, ...]) -> int:
    """Spatial positions of an NCHW map (1 for anything else)."""
    return shape[2] * shape[3] if len(shape) == 4 else 1


def _join(found: Iterable[str], order: tuple[str, ...]) -> str:
    found = set(found)
    return " + ".join([o for o in order if o in found] + sorted(found - set(order)))


class CardExtractor:
    """Reads the 13 components of one traced network."""

    def __init__(self, trace: Trace, input_size: tuple[int, int, int], family: str) -> None:
        self.trace = trace
        self.input_size = input_size
        self.family = family
        self.convs = [c for c in trace.calls_of(nn.Conv2d) if c.out_shape is not None]
        self.linears = [c for c in trace.calls_of(nn.Linear) if c.out_shape is not None]
        if not self.convs and not self.linears:
            raise ArchsimError("the network runs no Conv2d or Linear layer; write its card by hand")
        self.classifier = self._classifier()
        self.stem, self.stem_pooling = self._stem()
        self.attention = self._attention_calls()
        self.gates = [
            g for g in self._channel_gates() if not any(a.inside(g.path) or g.inside(a.path) for a in self.attention)
        ]

    # -- structure -------------------------------------------------------------------
    def _classifier(self) -> Call | None:
        width = _per_sample(self.trace.output_shape or ())
        layers = sorted(self.convs + self.linears, key=lambda c: c.start)
        return next((c for c in reversed(layers) if _per_sample(c.out_shape) == width), None)

    def _stem(self) -> tuple[list[Call], bool]:
        """The chain of convolutions at the input, and whether a strided pooling follows it."""
        if not self.convs:
            return [], False
        first = self.convs[0]
        modules = self.trace.modules
        layers = [
            n for n, m in modules.items() if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
        ]
        container = None
        parts = first.path.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            share = sum(1 for n in layers if n.startswith(prefix + ".")) / max(len(layers), 1)
            if share <= _STEM_SHARE:
                container = prefix
                break
        parent = ".".join(parts[:-1])

        def in_stem(call: Call) -> bool:
            if container is not None:
                return call.inside(container)
            return ".".join(call.path.split(".")[:-1]) == parent

        stem = [first]
        for call in self.trace.calls:
            if call.start <= first.start or not any(True for _ in call.module.parameters(recurse=False)):
                continue
            if not in_stem(call):
                break
            if isinstance(call.module, nn.Conv2d):
                if call.module.in_channels != stem[-1].module.out_channels or call.module.groups != 1:
                    break
                stem.append(call)
        after_stem = stem[-1].end
        next_layer = min(
            (c.start for c in self.convs + self.linears if c.start > after_stem), default=len(self.trace.ops) + 10**9
        )
        out_positions = _positions(stem[-1].out_shape)
        # A pooling that opens a block (e.g. an average-pool shortcut) belongs to that block, not the stem.
        blocks = [c for c in self.trace.calls if after_stem < c.start and c.end > next_layer]
        pooling = any(
            op.name in _WINDOW_POOL_OPS
            and _positions(op.out_shapes[0]) < _positions(op.in_shapes[0])
            and _positions(op.out_shapes[0]) > 1
            and not any(b.start < op.index < b.end for b in blocks)
            for op in self.trace.ops
            if after_stem < op.index < next_layer and op.out_shapes and op.in_shapes
        ) or any(
            # parameter-free downsampling modules, e.g. anti-aliased (blur) pooling
            not any(True for _ in c.module.parameters())
            and c.in_shape is not None
            and c.out_shape is not None
            and 1 < _positions(c.out_shape) < _positions(c.in_shape) <= out_positions
            for c in self.trace.calls
            if after_stem < c.start < next_layer and not any(b.start < c.start < b.end for b in blocks)
        )
        return stem, pooling

    def _attention_calls(self) -> list[Call]:
        """Modules that run a softmax over a query x key grid (or fused attention)."""
        paths: list[str] = []
        for op in self.trace.ops:
            if not op.stack or not op.in_shapes:
                continue
            if "scaled_dot_product" in op.name:
                q, k = op.in_shapes[0], op.in_shapes[1]
                hit = len(q) >= 2 and q[-2] > 1 and k[-2] > 1
            elif "softmax" in op.name:
                s = op.in_shapes[0]
                hit = len(s) >= 2 and s[-1] > 1 and s[-2] > 1 and s[0] % TRACE_BATCH == 0
            else:
                continue
            if hit and op.stack[-1] not in paths:
                paths.append(op.stack[-1])
        by_path = {c.path: c for c in self.trace.calls}
        return [by_path[p] for p in paths if p in by_path]

    def _channel_gates(self) -> list[Call]:
        """Smallest modules mapping an NCHW map to its own shape through a gate on a pooled descriptor."""
        found = []
        for call in self.trace.calls:
            shape = call.in_shape
            if shape is None or len(shape) != 4 or call.out_shape != shape or _positions(shape) <= 1 or call.path == "":
                continue
            channels = shape[1]
            if any(
                any(g in op.name for g in _GATE_OPS)
                and op.in_shapes
                and op.in_shapes[0][0] == TRACE_BATCH
                and _per_sample(op.in_shapes[0]) <= 4 * channels
                for op in self.trace.ops_within(call)
            ):
                found.append(call)
        return [c for c in found if not any(o is not c and o.inside(c.path) and o.path != c.path for o in found)]

    def _inside_any(self, call: Call, containers: list[Call]) -> bool:
        return any(call.inside(c.path) and call.path != c.path for c in containers)

    # -- components --------------------------------------------------------------------
    def base_architecture(self) -> str:
        stem_ids = {id(c) for c in self.stem}
        body_convs = [
            c
            for c in self.convs
            # convolutions of the raw image (multi-scale patch embeddings) are stems, not body
            if id(c) not in stem_ids
            and c.module.in_channels != self.input_size[0]
            and not self._inside_any(c, self.gates)
        ]
        body_linears = [c for c in self.linears if c is not self.classifier and not self._inside_any(c, self.gates)]
        if self.attention:
            base = "CNN" if not body_linears else ("Hybrid" if body_convs else "Transformer")
        elif self._token_mixing_linear(body_linears):
            base = "MLP-Mixer"
        elif not self.convs:
            base = "MLP"  # neither convolution nor attention nor token mixing: no CNN, whatever else it is
        else:
            base = "CNN"
        if self.family.startswith(NAS_FAMILIES):
            return f"NAS ({'TFM' if base == 'Transformer' else 'CNN'})"
        return base

    def _token_mixing_linear(self, linears: list[Call]) -> bool:
        if not self.stem:
            return False
        tokens, width = _positions(self.stem[-1].out_shape), self.stem[-1].module.out_channels
        # A linear layer along the token axis takes a transposed (B, C, N) view; shapes alone
        # cannot tell it from the channel MLP when N equals C, the memory layout can.
        return any(
            c.module.in_features == tokens and (tokens != width or (c.in_strides is not None and c.in_strides[-1] != 1))
            for c in linears
        )

    def hierarchical(self) -> str:
        if not self.stem:
            return NOT_APPLICABLE
        final = self._final_pool()
        if final is None:
            return NOT_APPLICABLE
        start = _positions(self.stem[-1].out_shape)
        return "Yes" if start / final[1] >= 1.5 else "No"

    def stem_layer(self) -> str:
        if not self.stem:
            return NOT_APPLICABLE
        parts = []
        for i, call in enumerate(self.stem):
            k, s = call.module.kernel_size[0], call.module.stride[0]
            parts.append(f"{k}s{s}" if i == 0 or s != 1 else f"{k}")
        return "/".join(parts)

    def normalization(self) -> str:
        # Norms of the pooled vector in the classifier head do not describe the body.
        final = self._final_pool()
        end = final[2] if final else len(self.trace.ops) + 10**9
        found = {
            label
            for op in self.trace.ops
            for key, label in _NORM_OPS.items()
            if key in op.name and op.index < end and op.in_shapes and op.in_shapes[0][0] % TRACE_BATCH == 0
        }
        for call in self.trace.calls:
            name = type(call.module).__name__
            if name.startswith("EvoNorm"):
                found.add("EvoNorm")
                found.discard("GN")  # EvoNorm's group statistics are not a GroupNorm layer
            elif name == "Affine":
                found.add("Affine transform")
        return _join(found, _NORM_ORDER) or "Norm-free"

    def activation(self) -> str:
        found = {_ACT_OPS[op.name.rstrip("_")] for op in self.trace.ops if op.name.rstrip("_") in _ACT_OPS}
        return _join(found, _ACT_ORDER) or "-"

    def _final_pool(self) -> tuple[str, int, int] | None:
        """(kind, positions pooled, op index) of the reduction feeding the classifier."""
        end = self.classifier.start if self.classifier is not None else len(self.trace.ops) + 10**9
        for op in reversed([op for op in self.trace.ops if op.index < end]):
            # The nearest pooling-kind operation before the classifier, even one over a single
            # position (a 1 x 1 final map at small input sizes is still global average pooling).
            if (
                op.name in _POOL_OPS
                and op.in_shapes
                and op.out_shapes
                and op.in_shapes[0][0] == TRACE_BATCH == op.out_shapes[0][0]
            ):
                before, after = _per_sample(op.in_shapes[0]), _per_sample(op.out_shapes[0])
                if after:
                    return _POOL_OPS[op.name], max(before // after, 1), op.index
        return None

    def final_pooling(self) -> str:
        final = self._final_pool()
        return final[0] if final else NOT_APPLICABLE

    def self_attention_2d(self) -> str:
        if not self.attention or self.base_architecture() not in ("CNN", "NAS (CNN)"):
            return "No"
        labels = list(
            dict.fromkeys(_SA_LABELS.get(type(c.module).__name__, type(c.module).__name__) for c in self.attention)
        )
        return f"Yes ({', '.join(labels)})"

    def channel_attention(self) -> str:
        if not self.gates:
            return "No"
        labels = list(dict.fromkeys(self._gate_label(c) for c in self.gates))
        named = [label for label in labels if label]
        return f"Yes ({', '.join(named)})" if named else "Yes"

    @staticmethod
    def _gate_label(call: Call) -> str:
        name = type(call.module).__name__
        return next((label for key, label in _CW_LABELS if key in name), "")

    def channel_attention_location(self) -> str:
        if not self.gates:
            return NOT_APPLICABLE
        by_path = {c.path: c for c in self.trace.calls}
        places = Counter()
        for gate in self.gates:
            parent = by_path.get(".".join(gate.path.split(".")[:-1]))
            if parent is None:
                continue
            # a convolution (or a module of convolutions) taking the gated map, not the block input as a shortcut does
            takers = [
                c
                for c in self.trace.calls
                if gate.end < c.start < parent.end and c.inside(parent.path) and c.in_shape == gate.out_shape
            ]
            later_conv = any(conv.inside(t.path) for t in takers for conv in self.convs)
            places["Middle" if later_conv else "End"] += 1
        return places.most_common(1)[0][0] if places else NOT_APPLICABLE

    def depthwise_conv(self) -> str:
        return "Yes" if any(c.module.groups == c.module.in_channels > 1 for c in self.convs) else "No"

    def group_conv(self) -> str:
        return "Yes" if any(1 < c.module.groups < c.module.in_channels for c in self.convs) else "No"

    def card(self) -> dict[str, str]:
        values = (
            self.base_architecture(),
            "Yes" if self.hierarchical() == "Yes" else "No",
            self.stem_layer(),
            f"{self.input_size[1]} x {self.input_size[2]}",
            self.normalization(),
            self.activation(),
            "Yes" if self.stem_pooling else "No",
            self.final_pooling(),
            self.self_attention_2d(),
            self.channel_attention(),
            self.channel_attention_location(),
            self.depthwise_conv(),
            self.group_conv(),
        )
        return dict(zip(CARD_COLUMNS, values, strict=True))


def extract_card_from_module(net: nn.Module, input_size: tuple[int, int, int]) -> dict[str, str]:
    """The card of a bare network that takes normalised (C, H, W) input."""
    trace = trace_forward(net, tuple(int(v) for v in input_size))
    return CardExtractor(trace, tuple(int(v) for v in input_size), type(net).__module__).card()


def model_cards(specs: list[str], cache=None, out: str | Path | None = None) -> pd.DataFrame:
    """The cards of the models ``specs`` (or ``@FILE`` lists), read off their forward passes on the CPU, in the
    layout of the SAT paper's table; written to the CSV ``out`` if given."""
    from archsim.cache import atomic_write_text, check_cache
    from archsim.models import create_model
    from archsim.specs import model_list

    if out is not None and Path(out).is_dir():
        raise ParameterError("out", f"{out} is a folder; give a CSV file name")
    store = check_cache(cache)
    found = {}
    for spec in model_list(specs):
        model = create_model(spec, cache=store, device="cpu")
        found[model.name] = extract_card(model)
    table = cards_table(found)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), table.to_csv())
    return table


def extract_card(model) -> dict[str, str]:
    """The card of a wrapped :class:`~archsim.models.SimModel`, at its own input resolution."""
    size = model.preprocess.input_size
    if size is None:
        raise ArchsimError(
            f"model {model.name!r} declares no input size; give its spec input_size=C:H:W or write its card by hand"
        )
    return extract_card_from_module(model.net, size)
