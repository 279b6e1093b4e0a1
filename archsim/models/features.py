"""Penultimate features: the input of a network's classifier layer."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from archsim.data.imageset import StoredImages, image_batches
from archsim.errors import ArchsimError
from archsim.models.wrapper import SimModel


def classifier_layer(model: SimModel) -> nn.Module:
    """The last Linear or Conv2d layer that runs and outputs one value per class.

    Found by one forward pass rather than by attribute names (``fc``, ``head``...),
    so it works for any network.
    """
    runs: list[tuple[nn.Module, torch.Size]] = []
    layers = [m for m in model.net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    hooks = [m.register_forward_hook(lambda mod, inputs, output: runs.append((mod, output.shape))) for m in layers]
    size = model.preprocess.input_size or (model.preprocess.channels, 32, 32)
    try:
        with torch.inference_mode():
            model(torch.zeros((1, *size), device=model.device))
    finally:
        for hook in hooks:
            hook.remove()
    width = model.num_outputs
    for layer, shape in reversed(runs):
        if shape[1:].numel() == width:
            return layer
    raise ArchsimError(
        f"model {model.name} has no Linear/Conv2d layer producing its {width} outputs; features need one"
    )


def feature_batches(
    model: SimModel, images: torch.Tensor | StoredImages, batch_size: int = 128
) -> Iterator[np.ndarray]:
    """[b, d] float32 inputs of the classifier layer, a batch of uint8 ``images`` (in memory or read
    from the cache) at a time: a consumer that writes them away holds one batch, never the set's."""
    layer = classifier_layer(model)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda mod, inputs, output: captured.append(inputs[0].flatten(1).float().cpu()))
    batches = image_batches(images, batch_size)
    try:
        with torch.inference_mode():
            for batch in tqdm(
                batches,
                total=-(-len(images) // batch_size),
                desc=f"features {model.name}",
                unit="batch",
                leave=False,
                disable=None,
            ):
                model(batch.to(model.device).float().div_(255.0))
                yield captured.pop().numpy()
    finally:
        hook.remove()


def penultimate_features(model: SimModel, images: torch.Tensor | StoredImages, batch_size: int = 128) -> torch.Tensor:
    """[M, d] float32 inputs of the classifier layer for uint8 ``images``, held whole (see :func:`feature_batches`)."""
    return torch.from_numpy(np.concatenate(list(feature_batches(model, images, batch_size))))
