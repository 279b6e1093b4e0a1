"""Seeded, deterministic supervised training used by the embedded zoo."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from archsim.data import ImageSet
from archsim.models.fastpath import convolutional

if TYPE_CHECKING:
    from archsim.attacks import PGD, NoiseSource

TRAINER_VERSION = 2
"""Enters every recipe's cache key; raised when a change here changes the weights a recipe gives
(2: one thread, batched augmentation, channels-last CNNs)."""


@dataclass(frozen=True)
class Recipe:
    """How a zoo model is trained; every field enters the zoo's cache key.

    ``augment`` is ``none`` or ``affine`` (random rotation, shift and scale per
    image); ``label_smoothing`` is the cross-entropy smoothing.
    ``adversarial_eps`` > 0 trains on PGD adversarial images instead of the clean
    ones (Madry et al.): ``adversarial_steps`` sign steps of 2.5 eps / steps from a
    random start in the L-infinity ball of that radius, made against the model
    being trained (in eval mode, so the attack leaves the batch-norm statistics alone).
    """

    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    label_smoothing: float = 0.0
    augment: str = "none"
    warmup_epochs: int = 2
    adversarial_eps: float = 0.0
    adversarial_steps: int = 7

    def describe(self) -> dict:
        fields = asdict(self)
        if not self.adversarial_eps:
            # Standard training: the keys stay those of the recipes from before adversarial training
            # existed, so their cached weights stay valid.
            del fields["adversarial_eps"], fields["adversarial_steps"]
        return {**fields, "trainer": TRAINER_VERSION}


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread for the block, restored after.

    The thread count changes how reductions are split, and so the trained weights
    (a zoo ResNet's differ by up to 0.8 after one epoch on 1 against 2 threads).
    One thread everywhere makes them the same on every machine of a CPU kind,
    whatever its core count, and lets :func:`archsim.models.zoo.train_zoo` train
    one model per core.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def affine_augmentation() -> Callable[[torch.Tensor], torch.Tensor]:
    """Random rotation (10 degrees), shift (10 %) and scale (0.9-1.1) drawn per image.

    kornia draws per image over a whole batch from torch's global generator;
    torchvision's RandomAffine draws one transform per call, and its per-image loop
    took 11.7x longer (41 ms against 3.5 ms for 64 digits, benchmarks/training.py),
    a fifth of the zoo's training time. Nearest-pixel sampling, as torchvision's default.
    """
    # Imported here: kornia takes seconds to import and only augmented training needs it.
    from kornia.augmentation import RandomAffine

    return RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), resample="nearest", p=1.0)


def train_classifier(
    build: Callable[[], nn.Module],
    preprocess: nn.Module,
    train: ImageSet,
    recipe: Recipe,
    seed: int,
    desc: str,
    keep_checkpoints: bool = False,
    teacher: nn.Module | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Train ``preprocess -> build()`` from scratch with AdamW and a cosine schedule.

    Returns the final state dict of the network and, if asked, its state at the
    end of every epoch. Trained on the CPU on one thread (:func:`one_thread`):
    bit-identical for the same seed and data on every machine of a CPU kind.
    With a ``teacher`` (a model of canonical [0, 1] images), hard-label
    distillation as in DeiT: half the loss on the true labels, half on the
    teacher's top-1 label of the same augmented image.
    """
    with one_thread():
        return _train(build, preprocess, train, recipe, seed, desc, keep_checkpoints, teacher)


def _train(
    build: Callable[[], nn.Module],
    preprocess: nn.Module,
    train: ImageSet,
    recipe: Recipe,
    seed: int,
    desc: str,
    keep_checkpoints: bool,
    teacher: nn.Module | None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    torch.manual_seed(seed)
    net = build()
    model = nn.Sequential(preprocess, net).train()
    if convolutional(net):
        # As in prepare(): oneDNN's NHWC kernels trained the zoo's CNNs 1.05-1.4x faster on one thread.
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / warmup
            if step < warmup
            else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        ),
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    augment = affine_augmentation() if recipe.augment == "affine" else None
    # Imported here: archsim.attacks imports archsim.models, which imports this module.
    from archsim.attacks import PGD, NoiseSource

    attack = (
        PGD(recipe.adversarial_eps, recipe.adversarial_steps, rel_step=2.5 / recipe.adversarial_steps)
        if recipe.adversarial_eps
        else None
    )
    shuffler = torch.Generator().manual_seed(seed)
    images = train.images.float() / 255.0
    checkpoints = []
    bar = tqdm(range(recipe.epochs), desc=desc, unit="epoch", leave=False, disable=None)
    for epoch in bar:
        order = torch.randperm(len(train), generator=shuffler)
        running = 0.0
        for start in range(0, len(order), recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            x = images[idx]
            if augment is not None:
                x = augment(x)
            if attack is not None:
                # The random start is drawn per (seed, step of training, image): the same on every machine.
                noise = NoiseSource(
                    seed, range(epoch * len(train) + start, epoch * len(train) + start + len(idx)), x.shape[1:]
                )
                x = adversarial_batch(model, net, attack, x, train.labels[idx], noise)
            logits = model(x)
            loss = loss_fn(logits, train.labels[idx])
            if teacher is not None:
                with torch.no_grad():
                    teacher_labels = teacher(x).argmax(1)
                loss = 0.5 * loss + 0.5 * loss_fn(logits, teacher_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item() * len(idx)
        bar.set_postfix(loss=f"{running / len(train):.3f}")
        if keep_checkpoints:
            checkpoints.append(_state(net))
    return _state(net), checkpoints


def adversarial_batch(
    model: nn.Module, net: nn.Module, attack: PGD, x: torch.Tensor, y: torch.Tensor, noise: NoiseSource
) -> torch.Tensor:
    """``attack``'s images of ``x`` against ``model`` as it stands, with ``net``'s weights frozen
    for the attack (only the input gradient is needed) and training mode restored after."""
    model.eval()
    net.requires_grad_(False)
    try:
        return attack.perturb(model, x, y, noise).detach()
    finally:
        net.requires_grad_(True)
        model.train()


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    # Copies in the standard layout whatever the layout trained in: a state is stored and loaded as plain arrays.
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in net.state_dict().items()}


def state_to_arrays(state: dict[str, torch.Tensor], prefix: str = "w/") -> dict[str, np.ndarray]:
    return {prefix + k: v.cpu().numpy() for k, v in state.items()}


def arrays_to_state(arrays: dict[str, np.ndarray], prefix: str = "w/") -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
