"""Decision-region similarity on image-triplet planes (Somepalli et al., CVPR 2022)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from archsim.data.imageset import StoredImages, image_rows

DEFAULT_RESOLUTION = 16
DEFAULT_TRIPLETS = 50
MARGIN = 0.25  # the grid spans the triangle of the three images plus this share on each side


def plane_triplets(labels: np.ndarray, n_triplets: int, seed: int = 0) -> np.ndarray:
    """[T, 3] indices of image triplets with three different labels, drawn with a seeded generator."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 3])
    triplets: list[list[int]] = []
    while len(triplets) < n_triplets:
        pick = rng.choice(len(labels), size=3, replace=False)
        if len(set(labels[pick].tolist())) == 3:
            triplets.append(sorted(pick.tolist()))
    return np.asarray(triplets)


def plane_points(triplet_images: torch.Tensor, resolution: int = DEFAULT_RESOLUTION) -> torch.Tensor:
    """[R*R, C, H, W] points x1 + a (x2 - x1) + b (x3 - x1), a and b on a grid over
    [-MARGIN, 1 + MARGIN], clipped to the image range; ``triplet_images`` is [3, C, H, W] in [0, 1]."""
    x1, x2, x3 = triplet_images
    steps = torch.linspace(-MARGIN, 1 + MARGIN, resolution, dtype=x1.dtype)
    a, b = torch.meshgrid(steps, steps, indexing="ij")
    a, b = a.reshape(-1, 1, 1, 1), b.reshape(-1, 1, 1, 1)
    return (x1 + a * (x2 - x1) + b * (x3 - x1)).clamp(0, 1)


def region_labels(
    model,
    images: torch.Tensor | StoredImages,
    triplets: np.ndarray,
    resolution: int = DEFAULT_RESOLUTION,
    batch_size: int = 256,
) -> np.ndarray:
    """[T, R*R] the model's label at every grid point of every triplet plane (uint8 ``images``,
    in memory or in the cache: only the triplets' images are read)."""
    chosen, positions = np.unique(np.asarray(triplets), return_inverse=True)
    picked = image_rows(images, chosen)
    out = np.empty((len(triplets), resolution * resolution), dtype=np.int64)
    with torch.inference_mode():
        for t, triplet in enumerate(
            tqdm(
                positions.reshape(len(triplets), 3),
                desc=f"regions {model.name}",
                unit="plane",
                leave=False,
                disable=None,
            )
        ):
            points = plane_points(picked[torch.as_tensor(triplet)].float() / 255, resolution)
            labels = [
                model(points[s : s + batch_size].to(model.device)).argmax(-1).cpu()
                for s in range(0, len(points), batch_size)
            ]
            out[t] = torch.cat(labels).numpy()
    return out


def region_agreement(labels: list[np.ndarray]) -> np.ndarray:
    """[N, N, T] share of grid points of each plane where two models agree."""
    stacked = np.stack(labels)  # [N, T, P]
    return (stacked[:, None] == stacked[None, :]).mean(-1)
