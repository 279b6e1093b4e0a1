"""Decision-boundary distance (Tramer et al., 2017): how far each model's boundary lies
along another model's adversarial direction."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from archsim.data.imageset import StoredImages, image_batches

DEFAULT_POINTS = 20


def sign_directions(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Unit L-infinity directions sign(grad_x CE) of ``model`` at uint8 ``images`` (one forward and backward each)."""
    out = []
    for s in range(0, len(images), batch_size):
        x = (images[s : s + batch_size].float() / 255).to(model.device).requires_grad_(True)
        loss = F.cross_entropy(model(x), labels[s : s + batch_size].to(model.device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        out.append(grad.sign().cpu())
    return torch.cat(out)


def boundary_distance(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    directions: torch.Tensor,
    max_distance: float,
    n_points: int = DEFAULT_POINTS,
    batch_size: int = 128,
) -> np.ndarray:
    """[M] smallest t on a grid of ``n_points`` in (0, max_distance] with model(x + t d) != y,
    in [0, 1] pixel units; ``max_distance * (1 + 1/n_points)`` where the label never changes
    and 0 where the clean image is already wrong."""
    ts = torch.linspace(max_distance / n_points, max_distance, n_points)
    result = np.empty(len(images))
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = images[s : s + batch_size].float() / 255
            d, y = directions[s : s + batch_size], labels[s : s + batch_size]
            clean_wrong = model(x.to(model.device)).argmax(-1).cpu() != y
            wrong = torch.zeros(len(x), n_points, dtype=torch.bool)
            for k, t in enumerate(ts):
                wrong[:, k] = model((x + t * d).clamp(0, 1).to(model.device)).argmax(-1).cpu() != y
            first = torch.where(
                wrong.any(1), ts[wrong.float().argmax(1)], torch.tensor(max_distance * (1 + 1 / n_points))
            )
            result[s : s + len(x)] = torch.where(clean_wrong, torch.zeros(()), first).numpy()
    return result


def boundary_distances(
    source,
    targets: Sequence,
    images: torch.Tensor | StoredImages,
    labels: torch.Tensor,
    max_distance: float,
    n_points: int = DEFAULT_POINTS,
    source_batch: int = 128,
    target_batches: Sequence[int] | None = None,
) -> np.ndarray:
    """[len(targets), M] :func:`boundary_distance` of each target along ``source``'s :func:`sign_directions`,
    in one pass over ``images`` a batch of ``source_batch`` at a time: neither the set nor its
    directions (4 bytes per pixel) are ever whole in memory."""
    target_batches = list(target_batches or [128] * len(targets))
    out = np.empty((len(targets), len(labels)))
    start = 0
    for batch in tqdm(
        image_batches(images, source_batch),
        total=-(-len(labels) // source_batch),
        desc=f"boundary along {source.name}",
        unit="batch",
        leave=False,
        disable=None,
    ):
        y = labels[start : start + len(batch)]
        directions = sign_directions(source, batch, y, source_batch)
        for t, (target, size) in enumerate(zip(targets, target_batches, strict=True)):
            out[t, start : start + len(batch)] = boundary_distance(
                target, batch, y, directions, max_distance, n_points, size
            )
        start += len(batch)
    return out


def boundary_gap(distances: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[N, N, M] |distance of A - distance of B| along A's and B's directions, averaged;
    ``distances[s, t]`` is model t's distance along source s's directions, ``valid[a, b]`` marks
    the images both classify correctly (NaN elsewhere)."""
    # Only the gaps along a pair's own directions enter, so [N, N, M] arrays suffice; the gaps along every
    # source ([N, N, N, M]) would be 131 GB for 69 models on 50,000 images.
    # [a, M]: a's distance along its own directions
    own = distances[np.arange(len(distances)), np.arange(len(distances))]
    along_a = np.abs(own[:, None, :] - distances)  # [a, b, M]: |d_a - d_b| along a's directions
    gap = along_a + along_a.transpose(1, 0, 2)  # the transpose is the gap along b's
    del along_a
    gap /= 2  # in place, as the NaNs below: one [N, N, M] array at a time besides the distances
    gap[~np.broadcast_to(valid, gap.shape)] = np.nan
    return gap
