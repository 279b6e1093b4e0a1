"""The fast path: bf16 autocast, memory layout, compilation and drawing noise ahead."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from archsim.attacks import PGD, NoiseSource
from archsim.attacks.tests.test_pgd import small_model
from archsim.errors import ArchsimError
from archsim.models import (
    Preprocess,
    SimModel,
    channels_last_by_default,
    check_precision,
    precision_context,
    prepare,
)
from archsim.transfer import predict


@pytest.fixture()
def images():
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (40, 1, 32, 32), generator=g, dtype=torch.uint8), torch.randint(
        0, 10, (40,), generator=g
    )


def test_noise_drawn_ahead_equals_noise_drawn_in_line_and_numpy():
    shape = torch.Size((2, 5, 5))
    indices = range(4, 4 + 2 * NoiseSource.PART + 5)  # three parts, the last a short one, drawn by three threads
    with ThreadPoolExecutor(3) as pool:
        ahead = NoiseSource(3, indices, shape, executor=pool)
        ahead.prefetch()
        drawn_ahead = ahead.draw()
    in_line = NoiseSource(3, indices, shape).draw()
    by_hand = np.stack([np.random.default_rng([3, i]).random((2, 5, 5), dtype=np.float32) * 2 - 1 for i in indices])
    assert torch.equal(drawn_ahead, in_line) and np.array_equal(in_line.numpy(), by_hand)
    keyed = NoiseSource(3, range(4, 7), shape).draw(1, 2)
    assert np.array_equal(
        keyed[0].numpy(), np.random.default_rng([3, 4, 1, 2]).random((2, 5, 5), dtype=np.float32) * 2 - 1
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_attack_and_prediction_hand_batches_back_in_order_and_agree_with_the_cpu(images):
    # Batches come back one batch late from page-locked copies: a batch out of order or overwritten
    # would disagree with the CPU on most pixels, where floating-point order moves only a few.
    x, y = images
    attack = PGD(eps=0.1, steps=5)
    on_cpu = attack(small_model(), x, y, seed=1, batch_size=40)
    gpu = small_model().to("cuda")
    on_gpu = attack(gpu, x, y, seed=1, batch_size=7)
    assert on_gpu.device.type == "cpu" and (on_gpu == on_cpu).float().mean() > 0.99
    assert torch.allclose(predict(gpu, x, 7), predict(small_model(), x, 40), atol=1e-2)
    # Evaluation runs NHWC on CUDA (cuDNN's faster inference kernels), the eager attack NCHW.
    evaluating = prepare(small_model().to("cuda"), purpose="evaluate")
    assert evaluating.channels_last and not prepare(small_model().to("cuda")).channels_last
    assert torch.allclose(predict(evaluating, x, 7), predict(small_model(), x, 40), atol=1e-2)


MEASURED = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "layout" / "nhwc_speedups.csv"


def nhwc_pays(cuda: bool, precision: str, compile: bool, purpose: str) -> bool:
    """From the measurements alone: NHWC where some model was measured in this setting, the best gained at least 5 %
    and none lost more than 2 %; unmeasured settings keep NCHW."""
    table = pd.read_csv(MEASURED, dtype=str)
    rows = table[
        (table.device == ("cuda" if cuda else "cpu"))
        & table.precision.isin([precision, "any"])
        & table["compile"].isin([str(compile), "any"])
        & (table.purpose == purpose)
    ]
    if rows.empty:
        return False
    return bool(
        rows.nhwc_speedup_high.astype(float).max() >= 1.05 and rows.nhwc_speedup_low.astype(float).min() >= 0.98
    )


@pytest.mark.parametrize("purpose", ["attack", "evaluate"])
@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("cuda", [False, True])
def test_default_memory_layout_follows_the_measurements(cuda, precision, compile, purpose):
    """The layout :func:`channels_last_by_default` picks, for every setting, is what the recorded speed-ups say
    (``benchmarks/results/layout/nhwc_speedups.csv``); a network without convolutions never changes layout."""
    assert channels_last_by_default(True, cuda, precision, compile, purpose) is nhwc_pays(
        cuda, precision, compile, purpose
    )
    assert channels_last_by_default(False, cuda, precision, compile, purpose) is False


def test_bf16_autocast_runs_the_network_in_bf16_and_stays_close(images):
    model = small_model()
    x = images[0].float() / 255
    with precision_context("cpu", "bf16"):
        assert model(x).dtype == torch.bfloat16
        low = predict(model, images[0], 16)
    high = predict(model, images[0], 16)
    assert low.dtype == torch.float32
    assert (low - high).norm() / high.norm() < 2e-2  # bf16 operands: ~3 significant digits
    assert (low.argmax(-1) == high.argmax(-1)).float().mean() >= 0.9
    with precision_context("cpu", "fp32"):
        assert model(x).dtype == torch.float32


def test_bf16_attack_succeeds_like_fp32(images):
    model = small_model()
    attack = PGD(eps=0.1, steps=10)
    fp32 = attack(model, *images, seed=0, batch_size=16)
    with precision_context("cpu", "bf16"):
        bf16 = attack(model, *images, seed=0, batch_size=16)
    assert not torch.equal(fp32, bf16)  # autocast really changed the computation
    fooled = [(predict(model, adv, 16).argmax(-1) != images[1]).float().mean() for adv in (fp32, bf16)]
    assert abs(fooled[0] - fooled[1]) <= 0.1


def test_prepare_on_the_cpu_turns_convolutional_networks_channels_last_without_changing_results(images):
    x, y = images
    model = small_model()
    before_logits = predict(model, x, 16)
    before_adv = PGD(eps=0.1, steps=5)(model, x, y, seed=0, batch_size=16)
    assert prepare(model, "fp32").channels_last  # oneDNN's NHWC kernels: faster on the CPU (BENCHMARKS.md)
    assert model.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(predict(model, x, 16), before_logits, atol=1e-5)
    # Another order of floating-point sums may flip a sign step where a gradient component is ~0, nothing more.
    after_adv = PGD(eps=0.1, steps=5)(model, x, y, seed=0, batch_size=16)
    assert (after_adv == before_adv).float().mean() > 0.99
    assert not prepare(small_model(), "fp32", channels_last=False).channels_last
    mlp = SimModel(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 10)),
        Preprocess((1, 16, 16), (0.5,), (0.5,)),
        "mlp",
        "test:mlp",
    )
    assert not prepare(mlp, "fp32").channels_last  # no convolution, nothing to gain


def test_compiled_model_attacks_like_the_eager_one(images):
    eager, compiled = small_model(), prepare(small_model(), compile=True)
    x, y = images[0][:16].float() / 255, images[1][:16]
    assert torch.allclose(PGD.input_gradient(compiled, x, y)[1], PGD.input_gradient(eager, x, y)[1], atol=1e-6)
    assert eager.fingerprint == compiled.fingerprint  # compiling must not move cache keys


def test_unknown_precision_is_one_line():
    assert check_precision("bf16") == "bf16"
    with pytest.raises(ArchsimError, match="unknown precision 'fp16'; use fp32 or bf16"):
        check_precision("fp16")


def test_channels_last_converts_only_four_dimensional_tensors():
    """A network holding a 3-d convolution (lambda_resnet50ts, lamhalobotnet50ts_256 do) goes channels-last:
    nn.Module.to(memory_format=channels_last) fails on its 5-d kernel."""
    from archsim.models import Preprocess, SimModel, prepare

    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Unflatten(1, (1, 4)), nn.Conv3d(1, 1, (1, 3, 3)), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)
    )
    model = SimModel(net, Preprocess((3, 12, 12), [0.5], [0.5]), "lambda-like", "test:lambda")
    with pytest.raises(RuntimeError, match="rank 4"):
        nn.Sequential(nn.Conv3d(1, 1, 3)).to(memory_format=torch.channels_last)
    with torch.inference_mode():  # a buffer cached during an inference pass, as ConViT's rel_indices
        net[0].register_buffer("cached", torch.ones(1, 2, 2, 3))
    before = model(torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0)))
    prepare(model, channels_last=True)
    assert net[0].cached.is_contiguous(memory_format=torch.channels_last)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last) and net[2].weight.dim() == 5
    after = model(torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(before, after, atol=1e-5)
