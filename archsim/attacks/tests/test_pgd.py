import pytest
import torch
from torch import nn

from archsim.attacks import PGD, create_attack, to_uint8
from archsim.errors import ArchsimError, ParameterError
from archsim.models import Preprocess, SimModel


def small_model(seed: int = 0) -> SimModel:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10)
    )
    return SimModel(net, Preprocess((1, 16, 16), (0.5,), (0.5,)), "small", "test:small")


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (12, 1, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (12,), generator=g)
    return images, labels


def test_pgd_matches_torchattacks(batch):
    torchattacks = pytest.importorskip("torchattacks")
    model = small_model()
    images, labels = batch
    x = images.float() / 255
    ours = PGD(eps=0.1, steps=10, rel_step=0.1, random_start=False).perturb(model, x, labels, None)
    theirs = torchattacks.PGD(model, eps=0.1, alpha=0.01, steps=10, random_start=False)(x, labels)
    assert torch.allclose(ours, theirs, atol=1e-6)


class TorchattacksStart:
    """The start torchattacks' PGD draws (uniform_(-eps, eps) from torch's global generator, seeded here),
    in the unit form archsim's PGD scales by eps, so both start from the same point."""

    def __init__(self, like: torch.Tensor, eps: float, seed: int) -> None:
        self.like, self.eps, self.seed = like, eps, seed

    def draw(self, *key):
        torch.manual_seed(self.seed)
        return torch.empty_like(self.like).uniform_(-self.eps, self.eps) / self.eps


def test_pgd_with_random_start_matches_torchattacks_from_the_same_start(batch):
    """The default path (random start on), against the reference with the start injected."""
    torchattacks = pytest.importorskip("torchattacks")
    model = small_model()
    images, labels = batch
    x = images.float() / 255
    ours = PGD(eps=0.1, steps=10, rel_step=0.1).perturb(model, x, labels, TorchattacksStart(x, 0.1, seed=5))
    torch.manual_seed(5)
    theirs = torchattacks.PGD(model, eps=0.1, alpha=0.01, steps=10, random_start=True)(x, labels)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(
        ours, PGD(eps=0.1, steps=10, rel_step=0.1, random_start=False).perturb(model, x, labels, None)
    )


def test_uint8_output_is_rounded_and_inside_ball(batch):
    model = small_model()
    images, labels = batch
    attack = PGD(eps=0.1, steps=5)
    adv = attack(model, images, labels, seed=0, batch_size=5)
    assert adv.dtype == torch.uint8
    assert (adv.int() - images.int()).abs().max() <= 25  # floor(0.1 * 255)


def test_rounding_rounds_not_truncates():
    clean = torch.tensor([100], dtype=torch.uint8)
    assert to_uint8(torch.tensor([100.6 / 255]), clean, 0.1).item() == 101
    # 25.5 levels would round to 126, outside the integer ball of radius 25.
    assert to_uint8(torch.tensor([125.5 / 255]), clean, 0.1).item() == 125


def test_random_start_is_seeded_and_batch_size_invariant(batch):
    model = small_model()
    images, labels = batch
    attack = PGD(eps=0.1, steps=3)
    a = attack(model, images, labels, seed=7, batch_size=12)
    b = attack(model, images, labels, seed=7, batch_size=5)
    c = attack(model, images, labels, seed=8, batch_size=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_pgd_fools_white_box():
    model = small_model()
    images = torch.randint(0, 256, (32, 1, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        labels = model(images.float() / 255).argmax(1)
    adv = PGD(eps=0.3, steps=20)(model, images, labels)
    with torch.inference_mode():
        fooled = (model(adv.float() / 255).argmax(1) != labels).float().mean()
    assert fooled > 0.9


@pytest.mark.parametrize(
    "options, message",
    [({"eps": 0}, "^eps must"), ({"eps": -1}, "^eps must"), ({"eps": 0.1, "steps": 0}, "^steps must")],
)
def test_bad_settings(options, message):
    with pytest.raises(ArchsimError, match=message):
        create_attack("pgd", **options)


def test_unknown_attack():
    with pytest.raises(ArchsimError, match="unknown attack"):
        create_attack("nope", eps=0.1)


def test_the_defaults_are_the_papers_and_the_config_names_every_setting():
    """50 steps of 0.1 x eps from a random start; the config is the attack's part of every cache key, so each
    setting must be in it under its own name."""
    pgd = PGD(eps=4 / 255)
    assert (pgd.steps, pgd.rel_step, pgd.random_start, pgd.uses_noise) == (50, 0.1, True, True)
    assert pgd.config() == {"name": "pgd", "eps": 4 / 255, "steps": 50, "rel_step": 0.1, "random_start": True}
    assert PGD(eps=0.1, steps=3, rel_step=0.5, random_start=False).config() == {
        "name": "pgd",
        "eps": 0.1,
        "steps": 3,
        "rel_step": 0.5,
        "random_start": False,
    }
    assert PGD(eps=0.1, random_start=False).uses_noise is False
    assert PGD(eps=0.1, rel_step=1.0).rel_step == 1.0  # a step of the whole radius is allowed, more is not
    with pytest.raises(ParameterError, match=r"^rel_step must lie in \(0, 1\], got 1.5$") as error:
        PGD(eps=0.1, rel_step=1.5)
    assert error.value.parameter == "rel_step"
