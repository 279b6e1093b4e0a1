"""Every attack against torchattacks on fixed models and inputs, and the call shape they share."""

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

from archsim.attacks import (
    APGD,
    ATTACKS,
    FGSM,
    MIFGSM,
    VMIFGSM,
    LowFrequencyPGD,
    create_attack,
)
from archsim.attacks.apgd import checkpoints
from archsim.data import load_data
from archsim.errors import ArchsimError, ParameterError
from archsim.models import Preprocess, SimModel

torchattacks = pytest.importorskip("torchattacks")


def untrained(seed: int = 0) -> SimModel:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10)
    )
    return SimModel(net, Preprocess((1, 16, 16), (0.5,), (0.5,)), "small", "test:small")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", split="eval", n_images=200, seed=0)


@pytest.fixture(scope="module")
def trained(digits):
    """A small CNN trained for a few seconds on the digits training split (about 95 % accurate)."""
    train = load_data("digits", split="train")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 10),
    )
    preprocess = Preprocess((1, 16, 16), (0.5,), (0.5,))
    x, y = train.images.float() / 255, train.labels
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        for batch in torch.randperm(len(x)).split(128):
            loss = nn.functional.cross_entropy(net(preprocess(x[batch])), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model = SimModel(net, preprocess, "trained", "test:trained")
    with torch.no_grad():
        assert (model(digits.images.float() / 255).argmax(1) == digits.labels).float().mean() > 0.9
    return model


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (12, 1, 32, 32), generator=g, dtype=torch.uint8).float() / 255, torch.randint(
        0, 10, (12,), generator=g
    )


def test_fgsm_matches_torchattacks(batch):
    model, (x, y) = untrained(), batch
    assert torch.allclose(FGSM(eps=0.1).perturb(model, x, y, None), torchattacks.FGSM(model, eps=0.1)(x, y), atol=1e-6)


def test_mifgsm_matches_torchattacks(batch):
    model, (x, y) = untrained(), batch
    ours = MIFGSM(eps=0.1, steps=8, decay=1.0).perturb(model, x, y, None)
    theirs = torchattacks.MIFGSM(model, eps=0.1, alpha=0.1 / 8, steps=8, decay=1.0)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)


class ReplayedTorchNoise:
    """Draws in torchattacks' order from torch's global generator, to compare like with like."""

    def __init__(self, like: torch.Tensor) -> None:
        self.like = like

    def draw(self, *key):
        return torch.randn_like(self.like).uniform_(-1, 1)


def test_vmifgsm_matches_torchattacks_on_the_same_draws(batch):
    model, (x, y) = untrained(), batch
    torch.manual_seed(11)
    ours = VMIFGSM(eps=0.1, steps=5, samples=4, beta=1.5).perturb(model, x, y, ReplayedTorchNoise(x))
    torch.manual_seed(11)
    theirs = torchattacks.VMIFGSM(model, eps=0.1, alpha=0.1 / 5, steps=5, decay=1.0, N=4, beta=1.5)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-5)


def success(model, x_adv, y):
    with torch.no_grad():
        return (model(x_adv).argmax(1) != y).float().mean().item()


class InjectedStart:
    """The uniform [-1, 1) draw torchattacks' APGD makes for its start (torch.rand after seeding the global
    generator), handed to archsim's APGD so both start from the same point."""

    def __init__(self, like: torch.Tensor, seed: int) -> None:
        self.like, self.seed = like, seed

    def draw(self, *key):
        torch.manual_seed(self.seed)
        return 2 * torch.rand(self.like.shape) - 1


@pytest.mark.parametrize("steps", [50, 17])
def test_apgd_matches_torchattacks_from_the_same_start(trained, digits, steps):
    """torchattacks.APGD ports AutoAttack: with the start injected, the same images come back (the
    latest misclassified iterate, or the clean image), for the paper's step count and an odd one
    whose checkpoints the reference computes by its own integer rule."""
    x, y = digits.images.float() / 255, digits.labels
    with torch.no_grad():
        right = trained(x).argmax(1) == y
    x, y = x[right][:120], y[right][:120]  # torchattacks attacks only these, drawing its start for them alone
    ours = APGD(eps=0.04, steps=steps).perturb(trained, x, y, InjectedStart(x, seed=0))
    theirs = torchattacks.APGD(trained, norm="Linf", eps=0.04, steps=steps, n_restarts=1, loss="ce", seed=0)(x, y)
    ours_fooled, theirs_fooled = trained(ours).argmax(1) != y, trained(theirs).argmax(1) != y
    assert 0.2 < theirs_fooled.float().mean() < 0.98  # a discriminating operating point
    assert (ours_fooled == theirs_fooled).float().mean() >= 0.99
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.equal(ours[~ours_fooled], x[~ours_fooled])  # never fooled: the clean image


def test_apgd_returns_clean_images_the_model_already_gets_wrong(trained, digits):
    x, y = digits.images[:40].float() / 255, (digits.labels[:40] + 1) % 10  # every label wrong
    assert torch.equal(APGD(eps=0.04, steps=5).perturb(trained, x, y, InjectedStart(x, seed=0)), x)


def test_apgd_checkpoints_follow_the_reference():
    # 100 steps: the paper's p = 0, .22, .41, .57, .70, .80, .87, .93, .99
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # Any other count as the reference's loop finds them (its counter3, k, size_decr and steps_min).
    for n in range(1, 121):
        k, shortest, decrease, counter, marks = (
            max(int(0.22 * n), 1),
            max(int(0.06 * n), 1),
            max(int(0.03 * n), 1),
            0,
            [],
        )
        for i in range(n):
            counter += 1
            if counter == k:
                marks.append(i + 1)
                counter, k = 0, max(k - decrease, shortest)
        assert checkpoints(n) == marks, n


def test_lowfreq_perturbation_is_low_frequency(trained, digits):
    x, y = digits.images[:64].float() / 255, digits.labels[:64]
    attack = LowFrequencyPGD(eps=0.1, steps=20, ratio=0.125)

    def low_share(adv):
        coefficients = scipy.fft.dctn((adv - x).numpy(), axes=(-2, -1), norm="ortho")
        return (coefficients[..., :4, :4] ** 2).sum() / (coefficients**2).sum()  # ceil(0.125 * 32) = 4

    low = low_share(attack.perturb(trained, x, y, _noise(x)))
    plain = low_share(create_attack("pgd", eps=0.1, steps=20).perturb(trained, x, y, _noise(x)))
    assert low > 0.9 and low > plain + 0.15, (low, plain)


def _outside_share(delta: np.ndarray, keep: int) -> float:
    coefficients = scipy.fft.dctn(delta, axes=(-2, -1), norm="ortho")
    return float(1 - (coefficients[..., :keep, :keep] ** 2).sum() / (coefficients**2).sum())


def test_lowfreq_perturbation_stays_in_the_band(trained, digits):
    """On the digits, whose black background bounds the perturbation at 0 (the [0, 1] box binds), the
    perturbation stays in the band up to less than uint8 rounding adds, in the ball and in [0, 1]; the
    per-pixel clip of archsim's earlier version leaked 38x more."""
    from archsim.attacks.base import project

    x, y = digits.images[:48].float() / 255, digits.labels[:48]
    attack = LowFrequencyPGD(eps=0.1, steps=10, ratio=0.25)
    adv = attack.perturb(trained, x, y, _noise(x))
    delta = (adv - x).double().numpy()
    assert np.abs(delta).max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    leak = _outside_share(delta, 8)  # ceil(0.25 * 32) = 8
    # What uint8 rounding adds: ~ (1/255)^2 / 12 per pixel, spread over all frequencies.
    rounding = delta.size * (1 / 255) ** 2 / 12 / (delta**2).sum()
    assert leak < rounding, (leak, rounding)
    clipped = x + attack.lowpass(0.1 * _noise(x).draw()).clamp(-0.1, 0.1)
    for _ in range(10):
        _, grad, _ = attack.input_gradient(trained, clipped, y)
        clipped = project(x + attack.lowpass(clipped - x + 0.01 * grad.sign()), x, 0.1)
    assert _outside_share((clipped - x).double().numpy(), 8) > 20 * leak  # 38x measured
    # Stored as uint8 (rounded, within the ball), the leak is the rounding's.
    stored = (attack(trained, digits.images[:48], y, seed=0).double() - digits.images[:48].double()).numpy() / 255
    assert _outside_share(stored, 8) < 3 * rounding


def test_into_band_is_the_projection_onto_band_and_box():
    """Dykstra's rounds converge to the nearest point of the band that the box allows: checked against
    that quadratic programme solved directly by scipy (SLSQP, over the band's 9 DCT coefficients)."""
    from scipy.optimize import minimize

    from archsim.attacks.lowfreq import dct_basis

    attack = LowFrequencyPGD(eps=0.1, ratio=0.5, projections=3000)
    v = 0.3 * torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    low, high = torch.full_like(v, -0.1), torch.full_like(v, 0.1)
    low[..., 0, :] = 0.0  # a saturated row, as a black border: the perturbation may not go below 0 there
    ours = attack.into_band(v, low, high).flatten().numpy()
    basis = torch.kron(dct_basis(6, 3, None, torch.float64), dct_basis(6, 3, None, torch.float64)).numpy()  # [9, 36]
    target, lo, hi = v.flatten().numpy(), low.flatten().numpy(), high.flatten().numpy()
    solved = minimize(
        lambda c: ((basis.T @ c - target) ** 2).sum(),
        np.zeros(9),
        jac=lambda c: 2 * basis @ (basis.T @ c - target),
        method="SLSQP",
        constraints=[
            {"type": "ineq", "fun": lambda c: basis.T @ c - lo},
            {"type": "ineq", "fun": lambda c: hi - basis.T @ c},
        ],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert solved.success
    assert np.allclose(ours, basis.T @ solved.x, atol=1e-4)
    assert (ours >= lo - 1e-12).all() and (ours <= hi + 1e-12).all()


def test_lowpass_is_the_dct_block_projection():
    noise = torch.rand(3, 2, 32, 24, dtype=torch.float64)
    attack = LowFrequencyPGD(eps=0.1, ratio=0.25)
    filtered = attack.lowpass(noise)
    assert torch.allclose(attack.lowpass(filtered), filtered)  # a projection
    coefficients = scipy.fft.dctn(filtered.numpy(), axes=(-2, -1), norm="ortho")
    expected = scipy.fft.dctn(noise.numpy(), axes=(-2, -1), norm="ortho")
    expected[..., 8:, :] = 0
    expected[..., :, 6:] = 0
    assert np.allclose(coefficients, expected)


def _noise(x):
    from archsim.attacks import NoiseSource

    return NoiseSource(0, range(len(x)), x.shape[1:])


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_shares_the_call_shape(name, trained, digits):
    """uint8 in, uint8 out, inside the integer ball, seeded and batch-size invariant, and it fools the model."""
    config = create_attack(name, eps=0.1).config()
    options = {"steps": 5} if "steps" in config else {}
    if "rel_step" in config:
        options["rel_step"] = 0.4  # five steps must be able to cross the ball
    if name == "vmifgsm":
        options["samples"] = 2
    attack = create_attack(name, eps=0.1, **options)
    images, labels = digits.images[:40], digits.labels[:40]
    a = attack(trained, images, labels, seed=3, batch_size=40)
    b = attack(trained, images, labels, seed=3, batch_size=16)
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert (a.int() - images.int()).abs().max() <= 25
    assert success(trained, a.float() / 255, labels) > 0.5


def test_attack_options_are_checked():
    # a ParameterError naming the Python keyword; the CLI names its flag (--steps, in tests/test_cli.py)
    with pytest.raises(ParameterError, match="^attack fgsm takes no steps; its options: eps only$") as raised:
        create_attack("fgsm", eps=0.1, steps=5)
    assert raised.value.parameter == "steps"
    with pytest.raises(ParameterError, match="^torchattacks.FGSM takes no random_start; its options: ") as raised:
        create_attack("torchattacks:FGSM", eps=0.1, random_start=True)
    with pytest.raises(ArchsimError, match="^option 'x' in 'pgd,x' is not key=value$"):
        create_attack("pgd,x", eps=0.1)
    assert create_attack(" pgd , rel-step = 0.2 ", eps=0.1).config()["rel_step"] == 0.2  # the grammar of specs
    with pytest.raises(ArchsimError, match="has no option 'decay'"):
        create_attack("pgd,decay=1", eps=0.1)
    with pytest.raises(ArchsimError, match="unknown attack"):
        create_attack("cw", eps=0.1)
    with pytest.raises(ArchsimError, match="must be a whole number"):
        create_attack("vmifgsm,samples=many", eps=0.1)
    with pytest.raises(ArchsimError, match="samples must be a positive"):
        create_attack("vmifgsm,samples=0", eps=0.1)
    with pytest.raises(ArchsimError, match="ratio must lie in"):
        create_attack("lowfreq-pgd,ratio=2", eps=0.1)
    assert create_attack("apgd-ce,steps=7,random_start=false", eps=0.1).config() == {
        "name": "apgd-ce",
        "eps": 0.1,
        "steps": 7,
        "rho": 0.75,
        "random_start": False,
    }
    assert np.isclose(create_attack("mifgsm", eps=0.1).config()["rel_step"], 0.1)


def test_torchattacks_pgd_through_archsim_equals_archsims_pgd_from_the_same_start(batch):
    """``torchattacks:PGD`` behind archsim's call shape: from the clean image (no random start) the stored uint8
    set equals archsim's PGD's; eps is archsim's, archsim's steps and rel_step map to torchattacks' steps and alpha."""
    x, y = batch
    model = untrained()
    images = (x * 255).round().to(torch.uint8)
    wrapped = create_attack("torchattacks:PGD,random_start=false", eps=0.1, steps=6, rel_step=0.2)
    assert wrapped.config() == {
        "name": "torchattacks:PGD",
        "eps": 0.1,
        "alpha": pytest.approx(0.02),
        "random_start": False,
        "steps": 6,
        "batch": 32,
        "torchattacks_version": torchattacks.__version__,
    }
    ours = create_attack("pgd", eps=0.1, steps=6, rel_step=0.2, random_start=False)
    assert torch.equal(wrapped(model, images, y, seed=0, batch_size=5), ours(model, images, y, seed=0, batch_size=5))


def test_a_torchattacks_attack_with_random_draws_is_deterministic_per_seed(batch):
    x, y = batch
    model = untrained()
    images = (x * 255).round().to(torch.uint8)
    jitter = create_attack("torchattacks:Jitter", eps=0.1, steps=3)
    first, again = jitter(model, images, y, seed=3, batch_size=6), jitter(model, images, y, seed=3, batch_size=6)
    assert torch.equal(first, again) and not torch.equal(first, jitter(model, images, y, seed=4, batch_size=6))
    assert (first.int() - images.int()).abs().max() <= round(0.1 * 255)
    # Its result depends on the batches (one draw per batch), so it keeps its own batch whatever the caller's size.
    assert torch.equal(first, jitter(model, images, y, seed=3, batch_size=2))
    small = create_attack("torchattacks:Jitter,batch=4", eps=0.1, steps=3)
    assert small.config()["batch"] == 4 and small.fixed_batch == 4
    with pytest.raises(ArchsimError, match="batch='0' of torchattacks:Jitter must be a whole number of 1 or more"):
        create_attack("torchattacks:Jitter,batch=0", eps=0.1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("torchattacks:Nope", "torchattacks has no attack 'Nope'; it has "),
        (
            "torchattacks:PGD,colour=red",
            "torchattacks.PGD has no option 'colour'; it takes: alpha, steps, random_start",
        ),
        ("torchattacks:PGD,steps=many", "option steps='many' of torchattacks.PGD must be a whole number"),
        ("torchattacks:PGD,torchattacks_version=0.0.1", "the run attacked with torchattacks 0.0.1 and"),
    ],
)
def test_torchattacks_specs_are_checked(spec, message):
    with pytest.raises(ArchsimError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_attack(spec, eps=0.1)
