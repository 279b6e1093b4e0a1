"""Batch sizes searched on the model: the search rule on curves worked out by hand, the memory
measurement on real allocations, and a run with ``auto`` equal to one with a fixed batch."""

import copy
import os
import sys

import numpy as np
import pytest
import torch

from archsim.attacks import create_attack
from archsim.cache import CacheStore
from archsim.data import load_data
from archsim.errors import ArchsimError
from archsim.models import create_model
from archsim.transfer import batching
from archsim.transfer.batching import (
    OutOfMemory,
    Trial,
    batch_size_for,
    check_batch_size,
    search_batch_size,
)
from archsim.transfer.stages import run_transfer
from archsim.transfer.tests.test_streaming import SPECS, store_in


def test_batch_size_is_a_positive_number_or_auto():
    assert check_batch_size("auto") == "auto"
    assert check_batch_size(64) == 64 and check_batch_size("64") == 64
    for bad in (0, -3, 1.5, True, "big", None):
        with pytest.raises(ArchsimError, match="positive whole number or 'auto'"):
            check_batch_size(bad)


def _curve(rates: dict[int, float], peaks: dict[int, int] | None = None, out_of_memory_from: int | None = None):
    """A trial from images per second (and peak bytes) per size; records the sizes tried."""
    tried: list[int] = []

    def trial(size: int) -> Trial:
        tried.append(size)
        if out_of_memory_from is not None and size >= out_of_memory_from:
            raise OutOfMemory
        return Trial(size / rates[size], None if peaks is None else peaks[size])

    return trial, tried


def test_search_keeps_the_smallest_batch_no_larger_one_beats_by_five_percent():
    # ResNet-50 on this VM's CPU: throughput peaks at a few images and falls with larger activations. The batch's
    # time is almost all per image (a fixed 0.02-0.04 s), so the search doubles: 2 is 9 % over 1, 4 (6 % over 2) is
    # chosen, 8 is 4.5 % over 4, 16 and 32 slower: three misses in a row end the growth, and 64 is never tried.
    rates = {1: 7.7, 2: 8.4, 4: 8.9, 8: 9.3, 16: 8.4, 32: 6.2, 64: 3.8}
    trial, tried = _curve(rates)
    assert search_batch_size(trial, 64, None) == 4 and tried == [1, 2, 4, 8, 16, 32]
    # ConvNeXt-T's attack step on this CPU: slower at 2 and 4 than at 1, fastest at 8. A third size is tried after two
    # misses, and finds it; 8 images took less time than 4, so no per-image time shows and the search jumps to the
    # limit, slower.
    convnext = {1: 4.27, 2: 1.99, 4: 2.3, 8: 5.95, 16: 5.62, 32: 3.9, 64: 3.0}
    trial, tried = _curve(convnext)
    assert search_batch_size(trial, 64, None) == 8 and tried == [1, 2, 4, 8, 64]
    # A miss followed by a gain goes on from the gain: 2 misses, 4 gains. Then 2 -> 4 took less time, no per-image
    # time shows, and the search jumps to the limit (within MAX_JUMP): no gain there, and nothing is left.
    trial, tried = _curve({1: 10, 2: 10.2, 4: 30, 8: 30, 16: 30})
    assert search_batch_size(trial, 16, None) == 4 and tried == [1, 2, 4, 16]


def test_search_jumps_where_a_fixed_cost_per_call_dominates_as_on_a_gpu():
    # A device far from busy: 0.1 s per call whatever the batch up to 64, then the time grows.
    rates = {1: 10, 2: 20, 4: 40, 8: 80, 16: 160, 32: 320, 64: 640, 128: 1000, 256: 1100, 512: 1120}
    trial, tried = _curve(rates)
    # 1 -> 2 shows no per-image time: a jump of MAX_JUMP to 16. From 2 and 16 (still flat) to 128; from 16 and 128,
    # time = 0.1 + 0.00028 x batch says the fixed part is under 5 % past 6,800 images: MAX_JUMP again, to the limit.
    # 512 gains 12 % over 128: chosen.
    assert search_batch_size(trial, 512, None) == 512 and tried == [1, 2, 16, 128, 512]
    # A device that saturates at 128: 512 is a miss, and 128 stays.
    trial, tried = _curve({**rates, 256: 1030, 512: 1040})
    assert search_batch_size(trial, 512, None) == 128 and tried == [1, 2, 16, 128, 512]


def test_search_takes_at_most_its_share_of_the_work_whatever_the_trials_find():
    # Each batch takes 1 s, whatever its size: every trial costs 2 s (TRIAL_STEPS), and the rate is the batch size.
    flat = {size: float(size) for size in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)}
    for work in (100, 1_000, 10_000, 100_000, 10**6, 10**7):
        trial, tried = _curve(flat)
        chosen = search_batch_size(trial, 1024, None, work=work)
        spent = batching.TRIAL_STEPS * len(tried)
        assert spent <= batching.SEARCH_SHARE * work / chosen + 1e-9  # the work takes work / chosen seconds
        # Each trial stopped short would have broken the share had the rate kept growing with the batch.
        assert chosen == max(tried)
    # 1,000 image-steps, 3 % of which is 30 image-steps: 1 and 2 are tried (2 + 2 s, within the 15 s the work takes at
    # 2 images a second). The next jump would go to 16, but had 16 taken 1 s too, 6 s would pass 3 % of the 62 s left:
    # 4 fits (6 s of 250 s) and 8 would not (8 s of 125 s). A larger job goes further; a large one to the limit.
    trial, tried = _curve(flat)
    assert search_batch_size(trial, 1024, None, work=1_000) == 4 and tried == [1, 2, 4]
    trial, tried = _curve(flat)
    assert search_batch_size(trial, 1024, None, work=10**5) == 256 and tried == [1, 2, 16, 128, 256]
    trial, tried = _curve(flat)
    assert search_batch_size(trial, 1024, None, work=10**9) == 1024
    # Work where even one trial at 1 image costs more than the share (2 image-steps > 3 % of 50) gets no trial: the
    # batch is then the largest the memory the model check measured predicts to fit, and at most the work.
    trial, tried = _curve(flat, {size: 1000 * size for size in flat})
    assert search_batch_size(trial, 64, budget=40_000, work=50, checked=(2, Trial(1.0, 2_000))) == 40
    assert search_batch_size(trial, 8, budget=40_000, work=50, checked=(2, Trial(1.0, 2_000))) == 8
    assert search_batch_size(trial, 8, budget=None, work=50) == 8 and tried == []
    # The wall time a trial reports is what counts (a GPU's first call at a size picks its kernels): a trial that
    # took 100 s leaves no room for another on 100,000 image-steps at 2 images a second (3 % is 1,500 s).
    slow = {size: Trial(1.0 / size, None, cost=1_000.0) for size in (1, 2, 4)}
    assert search_batch_size(lambda size: slow[size], 4, None, work=10**5) == 1


def test_a_cpu_curve_gets_its_best_size_within_the_share():
    # ResNet-50's attack step on this CPU (above) for PGD-10 on 256 images: 2,560 image-steps, about 290 s at the
    # best rate; 3 % is 8.3 s. Trials of 1, 2, 4 and 8 images cost 0.26 + 0.48 + 0.90 + 1.72 s. 16 is not tried: had
    # it taken 8's time (twice the rate), 5.1 s would pass 3 % of the 149 s the work would then take. 4 is chosen,
    # as without a share (8 is 4.5 % faster, a miss).
    rates = {1: 7.7, 2: 8.4, 4: 8.9, 8: 9.3, 16: 8.4, 32: 6.2, 64: 3.8}
    trial, tried = _curve(rates)
    assert search_batch_size(trial, 256, None, work=2_560) == 4 and tried == [1, 2, 4, 8]
    # 4 images through 1 step: no trial is worth it, and the batch is the whole work (memory allowing).
    trial, tried = _curve(rates)
    assert search_batch_size(trial, 4, None, work=4) == 4 and tried == []


def test_evaluation_starts_from_the_attack_choice_and_a_small_one_runs_there_untried():
    # ResNet-50's evaluation forward on this CPU (BENCHMARKS.md): best at 8-16, where its attack step is best at 4.
    # The clean pass of 256 images: 3 % of it pays for 7.7 images' forwards, less than one trial at 8 (2 x 8): it
    # runs at 8 (0.98x the best) untried, where the search from 1 could pay for 1 alone (0.49x).
    rates = {1: 8.44, 2: 11.83, 4: 12.68, 8: 16.96, 16: 17.33, 32: 16.91}
    trial, tried = _curve(rates)
    assert search_batch_size(trial, 256, None, work=256, start=8) == 8 and tried == []
    trial, tried = _curve(rates)
    assert search_batch_size(trial, 256, None, work=256) == 1 and tried == [1]
    # Its evaluation in a study of 20 sources, 5,120 images: the trials start at 8 and find nothing 5 % better.
    trial, tried = _curve(rates)
    assert search_batch_size(trial, 256, None, work=5_120, start=8) == 8 and tried[0] == 8 and 4 not in tried
    # A start the memory measured says does not fit gives the largest size below it that does: the check took 50
    # bytes for 2 images, so 8 would take 200, over 100, and 4 fits.
    trial, tried = _curve(rates)
    assert search_batch_size(trial, 256, 100, work=256, checked=(2, Trial(0.1, 50)), start=8) == 4 and tried == []
    # A start at the check's own size measures that size again: one point per size, and the line still extrapolates.
    peaks = {size: 100 * size for size in rates}
    trial, tried = _curve(rates, peaks)
    assert search_batch_size(trial, 32, 10_000, checked=(2, Trial(0.1, 150)), start=2) in rates and tried[:2] == [2, 4]
    # A start out of memory searches from 1 below it.
    trial, tried = _curve(rates, out_of_memory_from=8)
    assert search_batch_size(trial, 256, None, start=8) == 4 and tried == [8, 1, 2, 4]


def test_search_tries_the_limit_last_when_it_is_not_a_power_of_two():
    rates = {size: float(size) for size in (1, 2, 4, 8, 16, 32, 64, 100)}
    trial, tried = _curve(rates)
    assert search_batch_size(trial, 100, None) == 100 and tried == [1, 2, 16, 100]  # 128 is past the limit
    trial, tried = _curve({size: size / (0.01 + size) for size in (1, 2, 4, 8, 16, 32, 64, 100)})
    assert search_batch_size(trial, 100, None, min_gain=0.0) == 100 and tried == [1, 2, 4, 8, 16, 32, 64, 100]
    trial, tried = _curve({1: 1.0})
    assert search_batch_size(trial, 1, None) == 1 and tried == [1]


def test_search_stays_within_the_memory_budget_without_trying_a_size_that_would_not_fit():
    rates = {size: float(size) for size in (1, 2, 4, 8, 16, 32, 64, 128)}
    peaks = {size: 100 + 10 * size for size in rates}
    trial, tried = _curve(rates, peaks)
    # The flat curve jumps from 16 towards 128, which would take 1380 bytes by the line through 2 and 16, over 1000:
    # 64 (740) is the largest size on the way that fits, and nothing beyond it does.
    assert search_batch_size(trial, 128, budget=1000) == 64 and tried == [1, 2, 16, 64]
    # What the caller keeps per image counts too: 32 * (10 + 15) + 100 = 900 fits, 64 would take 1700.
    trial, tried = _curve(rates, peaks)
    assert search_batch_size(trial, 128, budget=1000, extra_bytes_per_image=15) == 32 and tried == [1, 2, 16, 32]
    # A measured peak over the budget is never chosen, even where the line from smaller sizes said it would fit; the
    # sizes a jump skipped below it are tried instead.
    peaks = {1: 10, 2: 20, 4: 40, 8: 5000, 16: 6000}
    trial, tried = _curve({size: float(size) for size in peaks}, peaks)
    assert search_batch_size(trial, 16, budget=1000) == 4 and tried == [1, 2, 16, 8, 4]


def test_search_stops_at_the_first_size_out_of_memory():
    rates = {size: float(size) for size in (1, 2, 4, 8, 16, 32, 64)}
    trial, tried = _curve(rates, out_of_memory_from=32)
    # The jump from 16 to the limit fails; the size it skipped, 32, fails too, and 16 stays.
    assert search_batch_size(trial, 64, None) == 16 and tried == [1, 2, 16, 64, 32]
    trial, _ = _curve(rates, out_of_memory_from=1)
    with pytest.raises(ArchsimError, match="not even one image fits"):
        search_batch_size(trial, 64, None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU peak is read from Linux's /proc")
def test_cpu_peak_memory_is_measured_from_real_allocations():
    cpu = torch.device("cpu")
    assert batching._peak_measurable(cpu)
    held = []

    def allocate() -> None:
        held.append(torch.ones(64 << 20, dtype=torch.uint8))  # 64 MiB, every page written

    peak = batching.peak_memory(cpu, allocate)
    assert 60 << 20 <= peak <= 80 << 20
    held.clear()
    # Freed memory is handed back before the next measurement, so a second allocation counts in full.
    assert 60 << 20 <= batching.peak_memory(cpu, allocate) <= 80 << 20
    held.clear()
    assert batching.peak_memory(cpu, lambda: None) < 8 << 20
    assert 0 < batching.memory_budget(cpu) < batching._host_memory_available()


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_peak_memory_and_budget_come_from_the_allocator():
    cuda = torch.device("cuda")
    held = []
    peak = batching.peak_memory(cuda, lambda: held.append(torch.empty(64 << 20, dtype=torch.uint8, device=cuda)))
    assert peak == 64 << 20
    # Memory torch has cached for tensors since freed counts as free.
    budget = batching.memory_budget(cuda)
    held.clear()
    assert torch.cuda.memory_reserved(cuda) > torch.cuda.memory_allocated(cuda)
    assert batching.memory_budget(cuda) == pytest.approx(
        budget + batching.MEMORY_SHARE["cuda"] * (64 << 20), abs=1 << 20
    )
    _, total = torch.cuda.mem_get_info(cuda)
    assert 0 < budget < total


@needs_cuda
def test_cuda_search_backs_off_at_out_of_memory_and_the_device_stays_usable():
    cuda = torch.device("cuda")
    model = create_model("timm:resnet18,pretrained=false", device="cuda")
    shape = (3, 2048, 2048)  # gigabytes per image in an attack step: out of memory long before 1024 images
    tried, failed = [], []
    trial = batching.step_trial(model, "attack", shape, "fp32")

    def recorded(size: int) -> Trial:
        tried.append(size)
        try:
            return trial(size)
        except OutOfMemory:
            failed.append(size)
            raise

    before = torch.cuda.memory_allocated(cuda)
    # No budget, and every larger size counts as a gain: only out of memory stops the growth.
    chosen = search_batch_size(recorded, 1024, None, min_gain=-1.0)
    assert failed == [tried[-1]] and 1 <= chosen < failed[0]
    assert torch.cuda.memory_allocated(cuda) == before
    assert trial(chosen).peak_bytes > 0  # what the failed size took was handed back
    # With the budget, the size chosen runs a real attack within it.
    budget = batching.memory_budget(cuda)
    within = batch_size_for(model, "auto", "attack", shape, 1024)
    assert within < failed[0]
    images = torch.randint(0, 256, (within, *shape), dtype=torch.uint8)
    attack = create_attack("pgd", eps=4 / 255, steps=1)
    peak = batching.peak_memory(cuda, lambda: attack(model, images, torch.zeros(within, dtype=torch.long), 0, within))
    assert peak <= budget


def test_auto_is_searched_on_the_model_once_and_cached(tmp_path, cache_dir, monkeypatch):
    store = store_in(tmp_path / "results", cache_dir)
    model = create_model("zoo:resnet-s0", cache=store)
    shape = tuple(load_data("digits", n_images=10).images.shape[1:])
    counters = store.hits, store.misses
    assert batch_size_for(model, 48, "attack", shape, 100, store) == 48  # a number is kept, nothing searched
    assert _choices(store) == 0
    chosen = {purpose: batch_size_for(model, "auto", purpose, shape, 100, store) for purpose in ("attack", "evaluate")}
    assert all(1 <= size <= 100 for size in chosen.values())
    assert _choices(store) == 2
    # A batch size is not a result: the counters of computed and found results do not move.
    assert (store.hits, store.misses) == counters

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(batching, "search_batch_size", no_search)
    entries = list((store.root / "batch").rglob("*.bin"))
    for entry in entries:
        os.utime(entry, (0, 0))
    assert {
        purpose: batch_size_for(model, "auto", purpose, shape, 100, store) for purpose in ("attack", "evaluate")
    } == chosen
    # A choice read is marked as used for `cache prune --older-than`, but is no result of the run.
    assert all(entry.stat().st_mtime > 0 for entry in entries)
    assert not any(kind == "batch" for kind, _ in store.used)
    # The same architecture with other weights shares the choice (speed does not depend on the weights).
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.net.parameters()).add_(1.0)
    assert other.fingerprint != model.fingerprint
    assert batch_size_for(other, "auto", "attack", shape, 100, store) == chosen["attack"]
    # Another number of images is another search.
    with pytest.raises(AssertionError, match="searched again"):
        batch_size_for(model, "auto", "attack", shape, 99, store)


def test_evaluation_search_starts_at_twice_the_attack_choice_of_the_architecture(tmp_path, cache_dir, monkeypatch):
    store = store_in(tmp_path / "results", cache_dir)
    model = create_model("zoo:resnet-s0", cache=store)
    shape = tuple(load_data("digits", n_images=10).images.shape[1:])
    starts = []
    search = batching.search_batch_size

    def spied(*args, **kwargs):
        starts.append(kwargs["start"])
        return search(*args, **kwargs)

    monkeypatch.setattr(batching, "search_batch_size", spied)
    batch_size_for(model, "auto", "evaluate", shape, 100, store, work=100)  # no attack searched yet: from 1
    attack = batch_size_for(model, "auto", "attack", shape, 100, store, work=1_000)
    batch_size_for(model, "auto", "evaluate", shape, 100, store, work=10_000)
    assert starts == [1, 1, batching.EVALUATION_START * attack]
    # Another input shape has no attack choice yet: from 1.
    batch_size_for(model, "auto", "evaluate", (shape[0], 12, 12), 100, store, work=10_000)
    assert starts[-1] == 1


def _choices(store: CacheStore) -> int:
    """Batch sizes chosen in ``store`` (beside the memory the model check measured)."""
    return sum(b"batch_size.npy" in entry.read_bytes() for entry in (store.root / "batch").rglob("*.bin"))


def test_a_run_with_auto_equals_one_with_a_fixed_batch(tmp_path, cache_dir):
    data = load_data("digits", n_images=45)
    attack = create_attack("pgd", eps=0.1, steps=3)
    fixed = run_transfer(SPECS, data, attack, store_in(tmp_path / "fixed", cache_dir), seed=2, batch_size=7)
    auto_store = store_in(tmp_path / "auto", cache_dir)
    auto = run_transfer(SPECS, data, attack, auto_store, seed=2, batch_size="auto")
    assert np.array_equal(fixed.adv_pred, auto.adv_pred)
    assert np.allclose(fixed.clean_logits, auto.clean_logits, atol=1e-5)
    # Searched per architecture, purpose and order of magnitude of the work: two models, attack and evaluation (the
    # clean pass, 45 images, and the evaluation, up to 90, share their order of magnitude).
    assert _choices(auto_store) == 4
    # The searches' time is reported apart from the work's, and a rerun (choices cached) spends none.
    assert (auto.timings.search_s > 0).all()
    assert (fixed.timings.search_s == 0).all() and (fixed.timings.evaluate_search_s == 0).all()
    searched = batching.search_seconds()
    again = run_transfer(SPECS, data, attack, auto_store, seed=3, batch_size="auto")
    assert batching.search_seconds() == searched and (again.timings.search_s == 0).all()


def test_resident_models_keep_what_fits_and_let_the_least_recently_used_go():
    from archsim.transfer.batching import ResidentBudget, ResidentModels, weight_bytes

    sizes = {"a": 10, "b": 20, "c": 30, "d": 1000}
    loaded: list[str] = []

    def load(spec):
        loaded.append(spec)
        return torch.nn.Linear(sizes[spec], 1, bias=False)  # 4 bytes a weight

    models = ResidentModels(load, ResidentBudget(models=3, bytes=4 * 60))
    assert weight_bytes(models("a")) == 40
    first_b = models("b")
    models("a")  # a is now the most recently used
    assert models("b") is first_b and loaded == ["a", "b"] and models.held_bytes == 4 * 30
    models("c")  # 60 weights: over the budget by... nothing: 4 * 60 is allowed
    assert loaded == ["a", "b", "c"] and models.held_bytes == 4 * 60
    models("d")  # larger than the budget alone: it stays, every other leaves
    assert models.held_bytes == 4 * 1000 and models.loads == 4
    models("a")
    assert loaded[-1] == "a" and models.loads == 5 and models.held_bytes == 4 * 10  # d left: a fits alone
    count_bound = ResidentModels(load, ResidentBudget(models=1, bytes=1 << 40))
    count_bound("a"), count_bound("b"), count_bound("a")
    assert loaded[-3:] == ["a", "b", "a"] and count_bound.held_bytes == 40


def test_the_check_costs_one_attack_step_and_its_models_serve_the_attacks(tmp_path, cache_dir, monkeypatch):
    from archsim.attacks import Attack
    from archsim.transfer import stages

    built, steps = [], []
    real_create, real_gradient = stages.create_model, Attack.input_gradient

    def counted_create(spec, **kwargs):
        built.append(spec)
        return real_create(spec, **kwargs)

    def counted_gradient(model, x, y):
        steps.append(len(x))
        return real_gradient(model, x, y)

    monkeypatch.setattr(stages, "create_model", counted_create)
    monkeypatch.setattr(Attack, "input_gradient", staticmethod(counted_gradient))
    data = load_data("digits", n_images=20)
    store = store_in(tmp_path / "results", cache_dir)
    result = run_transfer(SPECS, data, create_attack("fgsm", eps=0.1), store, batch_size=8)
    # The check: one build and one attack step on 2 images per model (evaluation runs in the same layout on a CPU).
    # The attack tasks take the checked models; evaluation builds each target once more.
    assert steps[:2] == [2, 2] and built == SPECS + SPECS
    assert stages.CHECKED.limit == 0 and stages.CHECKED.held_bytes == 0  # released when the run ends
    # Where nothing may be kept (an engine's other processes), the attack tasks build their own.
    built.clear()
    monkeypatch.setattr(stages.CheckedModels, "offer", lambda self, spec, device, model: None)
    again = run_transfer(SPECS, data, create_attack("fgsm", eps=0.1), store_in(tmp_path / "b", cache_dir), batch_size=8)
    assert built == SPECS * 3
    assert np.array_equal(result.adv_pred, again.adv_pred)
    # What the check measured is kept for the batch-size search: the peak memory of its 2 images.
    checked = batching._checked(create_model(SPECS[0], cache=store), tuple(data.images.shape[1:]), "fp32", store)
    assert checked is not None and checked[0] == 2 and checked[1].peak_bytes >= 0
