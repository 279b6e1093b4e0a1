"""Models, data and attacks given as Python objects: the same results and guarantees as specs."""

import numpy as np
import pandas as pd
import pytest
import torch

from archsim.applications.newcomer import add_model
from archsim.attacks import PGD
from archsim.cache import CacheStore
from archsim.data import load_data, memory_spec
from archsim.errors import ArchsimError, ParameterError
from archsim.held import release
from archsim.models import create_model, object_spec
from archsim.runs import load_run, run_sat
from archsim.tests.cli_runner import run_cli

SPECS = ["zoo:resnet-s0", "zoo:convnext"]
SETTINGS = dict(n_images=60, steps=5, rel_step=0.3, n_boot=50)


@pytest.fixture(scope="module")
def zoo_objects(cache_dir):
    """The two zoo models built from their specs, and the eval digits as tensors."""
    store = CacheStore(cache_dir)
    models = {spec.split(":")[1]: create_model(spec, cache=store) for spec in SPECS}
    digits = load_data("digits", n_images=60, seed=0)
    return models, digits


def test_modules_on_tensors_equal_their_specs_and_a_second_call_computes_nothing(zoo_objects, cache_dir, tmp_path):
    models, digits = zoo_objects
    by_spec = run_sat(SPECS, data="digits", **SETTINGS, cache=cache_dir)
    nets = {name: (model.net, model.preprocess) for name, model in models.items()}
    flags = {name: [p.requires_grad for p in model.net.parameters()] for name, model in models.items()}
    data = (digits.images.float() / 255, digits.labels, 10)  # floats in [0, 1], as a notebook holds them
    first = run_sat(
        nets, data=data, eps=25 / 255, steps=5, rel_step=0.3, n_boot=50, cache=cache_dir, out=tmp_path / "run"
    )
    # The same networks and pixels: the same fingerprints, so the spec run's sets and predictions serve.
    pd.testing.assert_frame_equal(first.sat, by_spec.sat, check_exact=True)
    assert list(first.models.fingerprint) == list(by_spec.models.fingerprint)
    assert first.config["data_fingerprint"] == by_spec.config["data_fingerprint"]
    again = run_sat(nets, data=data, eps=25 / 255, steps=5, rel_step=0.3, n_boot=50, cache=cache_dir)
    assert again.cache_misses == 0
    # archsim attacked copies: the user's modules are as they were (the zoo's are frozen, as SimModels).
    assert {name: [p.requires_grad for p in model.net.parameters()] for name, model in models.items()} == flags
    assert [s.split(",")[0] for s in first.transfer.specs] == ["object:resnet-s0", "object:convnext"]

    # The folder reads back exactly, and commands in a process that holds no module rebuild it from the cache (the
    # run's footprint lists the saved modules, so that pruning by run keeps them).
    listed = (tmp_path / "run" / "cache_entries.txt").read_text().split()
    assert sum(line.startswith("module/") for line in listed) == 2
    loaded = load_run(tmp_path / "run")
    for table in ("sat", "pairs", "models", "cards"):
        pd.testing.assert_frame_equal(getattr(loaded, table), getattr(first, table), check_exact=True)
    spec = first.transfer.specs[1]
    release(spec.split("fingerprint=")[1])
    rebuilt = create_model(spec, cache=CacheStore(cache_dir))
    assert rebuilt.fingerprint == models["convnext"].fingerprint and rebuilt.name == "convnext"


def test_a_changed_module_is_another_model(zoo_objects):
    models, _ = zoo_objects
    net = models["resnet-s0"].net
    before = object_spec(net, "r", models["resnet-s0"].preprocess)
    copy = create_model(before)
    with torch.no_grad():
        next(copy.net.parameters()).add_(1.0)
    after = object_spec(copy.net, "r", copy.preprocess)
    assert before != after and create_model(after).fingerprint != models["resnet-s0"].fingerprint


def test_data_as_a_dataset_equals_the_same_tensors(tmp_path):
    digits = load_data("digits", n_images=30, seed=0)
    store = CacheStore(tmp_path / "cache")
    dataset = torch.utils.data.TensorDataset(digits.images, digits.labels)
    dataset.classes = [str(c) for c in range(10)]
    hwc = digits.images.permute(0, 2, 3, 1).numpy()  # a numpy array in [N, H, W, C]
    assert memory_spec(dataset, store) == memory_spec((hwc, digits.labels.numpy(), 10), store)
    read = load_data(memory_spec(dataset, store), store=store)
    assert read.fingerprint == digits.fingerprint and read.classes == digits.classes


@pytest.mark.parametrize(
    "data,message",
    [
        ((torch.rand(4, 3, 8, 8) * 2, torch.zeros(4)), "outside \\[0, 1\\]"),
        (
            (torch.zeros(4, 5, 8, 8), torch.zeros(4)),
            "images of shape \\(4, 5, 8, 8\\) are not \\[N,H,W\\], \\[N,C,H,W\\]",
        ),
        ((torch.zeros(4, 3, 8, 8), torch.zeros(3)), "4 images but 3 labels"),
        ((torch.zeros(4, 3, 8, 8), torch.tensor([0.5, 1, 2, 3])), "whole class indices"),
        ((torch.zeros(4, 3, 8, 8), torch.arange(4), 2), "a label is 3, but there are 2 classes"),
        (torch.utils.data.TensorDataset(torch.zeros(2, 3, 8, 8)), "not an \\(image, label\\) pair"),
        (42, "give a spec string"),
    ],
)
def test_bad_data_objects_are_one_line_naming_data(tmp_path, data, message):
    with pytest.raises(ParameterError, match=message) as error:
        memory_spec(data, CacheStore(tmp_path / "cache"))
    assert error.value.parameter == "data" and "\n" not in str(error.value)


def test_bad_model_objects_are_one_line_naming_models(zoo_objects):
    models, _ = zoo_objects
    net = models["resnet-s0"].net
    with pytest.raises(ParameterError, match="no preprocessing archsim can read"):
        run_sat({"a": torch.nn.Linear(3, 2), "b": net})
    with pytest.raises(ParameterError, match="cannot name a model \\(it holds a path separator\\)"):
        object_spec(net, "a/b", models["resnet-s0"].preprocess)
    with pytest.raises(ParameterError, match="takes mean, std"):
        object_spec(net, "a", {"mean": 0.5, "scale": 2})
    with pytest.raises(ParameterError, match="got a int where a spec string or an nn.Module belongs"):
        run_sat([1, 2])
    with pytest.raises(ArchsimError, match="this process does not hold and the cache"):
        create_model("object:ghost,fingerprint=0123456789abcdef", cache=CacheStore())


def test_an_attack_instance_is_the_attack_of_its_spec(zoo_objects, cache_dir):
    by_spec = run_sat(SPECS, attack="pgd", eps=25 / 255, **SETTINGS, cache=cache_dir)
    instance = PGD(eps=25 / 255, steps=5, rel_step=0.3)
    by_object = run_sat(SPECS, attack=instance, n_images=60, n_boot=50, cache=cache_dir)
    pd.testing.assert_frame_equal(by_object.sat, by_spec.sat, check_exact=True)
    assert by_object.cache_misses == 0
    with pytest.raises(ParameterError, match="the Attack instance's own setting") as error:
        run_sat(SPECS, attack=instance, steps=3, cache=cache_dir)
    assert error.value.parameter == "steps"


def test_a_run_of_objects_in_the_cli_afterwards(zoo_objects, cache_dir, tmp_path, capsys):
    """``archsim report``, ``measures`` and ``add`` on a folder a Python run of modules wrote, the modules no longer
    held: ``add`` evaluates them on the newcomer's set, rebuilt from the copies the run saved in the cache."""
    models, digits = zoo_objects
    nets = {name: (model.net, model.preprocess) for name, model in models.items()}
    run = run_sat(nets, data=(digits.images, digits.labels, 10), eps=25 / 255, **SETTINGS, cache=cache_dir)
    out = run.save(tmp_path / "saved")
    html = run._repr_html_()
    assert "Most similar pairs" in html and "data:image/png;base64," in html and "convnext ~ resnet-s0" in html
    for spec in run.transfer.specs:
        release(spec.split("fingerprint=")[1])
    code, stdout, err = run_cli(capsys, "report", "--run", str(out))
    assert code == 0 and (out / "report.html").is_file(), err
    code, stdout, err = run_cli(capsys, "measures", "--run", str(out), "--measures", "disagreement")
    assert code == 0, err
    assert (out / "measures" / "measure_disagreement.csv").is_file()
    code, stdout, err = run_cli(capsys, "add", "--run", str(out), "zoo:resnet-s1")
    assert code == 0, err
    added = pd.read_csv(out / "added" / "resnet-s1" / "sat.csv", index_col=0)
    assert list(added.index) == ["resnet-s0", "convnext", "resnet-s1"] and added.notna().all().all()

    # The same newcomer given as a module from Python: the same row, and the module saved with the N+1-model run.
    resnet_s1 = create_model("zoo:resnet-s1", cache=CacheStore(cache_dir))
    newcomer = add_model(out, {"s1-module": (resnet_s1.net, resnet_s1.preprocess)}, cache=cache_dir)
    assert newcomer.cache_misses == 0  # every set and prediction was cached by the CLI's add
    np.testing.assert_array_equal(newcomer.run.sat.to_numpy(), added.to_numpy())
    assert any(line.startswith("module/") for line in (newcomer.out / "cache_entries.txt").read_text().split())
