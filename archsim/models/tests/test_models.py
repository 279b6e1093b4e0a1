import warnings

import pytest
import timm
import torch
from torch import nn

from archsim.cache import CacheStore
from archsim.errors import ArchsimError
from archsim.models import Preprocess, SimModel, check_model_specs, create_model


@pytest.fixture()
def images():
    return torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(0))


def test_timm_checkpoint_made_here_predicts_like_its_source(tmp_path, images):
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False, num_classes=7)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    wrapped = create_model(f"timm:resnet18,checkpoint={path},num_classes=7", cache=CacheStore(tmp_path / "c"))
    source.eval()
    cfg = timm.data.resolve_data_config(model=source)
    reference_in = torch.nn.functional.interpolate(images, size=cfg["input_size"][1:], mode="bicubic", antialias=True)
    reference_in = (reference_in - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected = source(reference_in)
        got = wrapped(images)
    assert torch.allclose(got, expected, atol=1e-4)
    assert wrapped.num_outputs == 7
    assert not any(p.requires_grad for p in wrapped.parameters())
    assert not wrapped.training


def test_fingerprint_tracks_weights_and_preprocessing():
    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    a = SimModel(net, Preprocess(None, (0.0,) * 4, (1.0,) * 4), "a", "x")
    b = SimModel(net, Preprocess(None, (0.5,) * 4, (1.0,) * 4), "b", "x")
    assert a.fingerprint != b.fingerprint
    net2 = nn.Linear(4, 2)
    c = SimModel(net2, Preprocess(None, (0.0,) * 4, (1.0,) * 4), "c", "x")
    assert a.fingerprint != c.fingerprint
    d = SimModel(net, Preprocess(None, (0.0,) * 4, (1.0,) * 4), "d", "y")
    assert a.fingerprint == d.fingerprint


def test_wrapper_resizes_and_converts_channels():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    model = SimModel(net, Preprocess((3, 8, 8), (0.5,), (0.5,)), "m", "x")
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0


def test_file_module_and_torchscript(tmp_path, images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    torch.save(net, tmp_path / "m.pt")
    torch.jit.save(torch.jit.script(net), tmp_path / "s.pt")
    cache = CacheStore(tmp_path / "c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pickled module is not sent through torch.jit.load (deprecated, so it warned)
        pickled = create_model(f"file:{tmp_path / 'm.pt'},input_size=3:24:24", cache=cache)
    scripted = create_model(f"file:{tmp_path / 's.pt'},input_size=3:24:24,name=scripted", cache=cache)
    assert type(pickled.net) is nn.Sequential and isinstance(scripted.net, torch.jit.ScriptModule)
    assert scripted.name == "scripted"
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ArchsimError, match="cannot load model file .*bad.pt"):
        create_model(f"file:{tmp_path / 'bad.pt'}", cache=cache)
    with torch.no_grad():
        assert torch.allclose(pickled(images), scripted(images), atol=1e-6)


def test_torchvision_random_init(tmp_path):
    model = create_model("torchvision:resnet18,pretrained=false,num_classes=4", cache=CacheStore(tmp_path))
    assert model.num_outputs == 4 and model.preprocess.input_size == (3, 224, 224)


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_random_weights_are_drawn_from_init_seed(tmp_path, source):
    """A run builds each model again in every task: random weights must come out the same each time."""
    cache = CacheStore(tmp_path)
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    first = create_model(f"{source}:resnet18,pretrained=false,num_classes=3", cache=cache)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's generator is left as it was
    again = create_model(f"{source}:resnet18,pretrained=false,num_classes=3,init_seed=0", cache=cache)
    other = create_model(f"{source}:resnet18,pretrained=false,num_classes=3,init_seed=1", cache=cache)
    assert first.fingerprint == again.fingerprint != other.fingerprint
    assert torch.equal(first.net.fc.weight, again.net.fc.weight) and not torch.equal(
        first.net.fc.weight, other.net.fc.weight
    )
    with pytest.raises(ArchsimError, match="init_seed='-1' .* must be at least 0"):
        create_model(f"{source}:resnet18,pretrained=false,init_seed=-1", cache=cache)


def test_training_regimes_come_from_the_weights(tmp_path):
    """The training-vs-architecture table (docs/method.md#analysis) tells seeds from regimes from architectures."""
    import pandas as pd

    from archsim.analysis.training import relation_groups
    from archsim.models.sources import _training

    cache = CacheStore(tmp_path)
    specs = {
        "a": "timm:resnet18,pretrained=false,num_classes=3",
        "b": "timm:resnet18,pretrained=false,num_classes=3,init_seed=1",
        "c": "timm:resnet10t,pretrained=false,num_classes=3",
    }
    models = {name: create_model(spec, cache=cache) for name, spec in specs.items()}
    assert [(m.info["regime"], m.info["seed"]) for m in models.values()] == [
        ("untrained", 0),
        ("untrained", 1),
        ("untrained", 0),
    ]
    path = tmp_path / "r18.pth"
    torch.save(models["a"].net.state_dict(), path)
    # archsim cannot know
    assert "regime" not in create_model(f"timm:resnet18,checkpoint={path},num_classes=3", cache=cache).info
    # ... unless the user says: labels that change no weights.
    labelled = create_model(
        f"timm:resnet18,checkpoint={path},num_classes=3,regime=cutmix,hparams=lr0.1,seed=4,name=mine", cache=cache
    )
    assert (labelled.info["regime"], labelled.info["hparams"], labelled.info["seed"], labelled.fingerprint) == (
        "cutmix",
        "lr0.1",
        4,
        models["a"].fingerprint,
    )
    assert create_model("zoo:resnet-s0", cache=cache).info["hparams"] == "lr=0.002,wd=0.05,batch=64,epochs=20,warmup=2"
    for spec, message in (
        ("zoo:resnet-s0,regime=cutmix", "a zoo model's regime, hyper-parameters and seed are its own"),
        ("timm:resnet18,pretrained=false,seed=-2", "seed='-2' .* must be at least 0"),
    ):
        with pytest.raises(ArchsimError, match=message):
            create_model(spec, cache=cache)
        with pytest.raises(ArchsimError, match=message):
            check_model_specs([spec])
    # Hub weights: the pretrained tag is the recipe (resnet50.a1_in1k, .tv_in1k: one architecture, two regimes).
    tags = [timm.create_model(n, pretrained=False).pretrained_cfg["tag"] for n in ("resnet50", "resnet50.tv_in1k")]
    assert [_training({"pretrained": True, "checkpoint": None}, t)["regime"] for t in tags] == ["a1_in1k", "tv_in1k"]
    table = pd.DataFrame([{"model": n, "architecture": m.architecture_id, **m.info} for n, m in models.items()])
    sat = pd.DataFrame(1.0, index=list(models), columns=list(models))
    assert {k: len(v) for k, v in relation_groups(sat, table).items()} == {
        "different seeds": 1,
        "different architectures": 2,
    }


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope:x", "unknown scheme"),
        ("timm:not_a_model", "unknown timm model"),
        ("timm:resnet18,checkpoint=/no/such.pth", "does not exist"),
        ("zoo:unknown", "unknown zoo model"),
        ("file:/no/such/file.pt", "does not exist"),
        ("timm:resnet18,pretrained=maybe", "not a boolean"),
        ("timm:resnet18,pretrained=false,colour=red", "unknown option"),
        ("timm:resnet18,oops", "not key=value"),
    ],
)
def test_bad_specs(tmp_path, spec, message):
    with pytest.raises(ArchsimError, match=message):
        create_model(spec, cache=CacheStore(tmp_path))


def test_specs_are_checked_without_building_anything(tmp_path, monkeypatch):
    from archsim.models import check_model_specs

    monkeypatch.setenv("ARCHSIM_CACHE", str(tmp_path / "cache"))  # a zoo model built here would train into it
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    torch.save(net, tmp_path / "mine.pt")
    good = [
        "zoo:vit",
        "zoo:vit,epoch=2",
        "timm:resnet18,pretrained=false,num_classes=3,init_seed=1",
        "torchvision:resnet18,pretrained=false,name=tv18",
        f"file:{tmp_path / 'mine.pt'},input_size=3:4:4",
        f"file:{tmp_path / 'mine.pt'},name=other",
    ]
    check_model_specs(good)
    assert not (tmp_path / "cache").exists()
    for specs, message in (
        (["zoo:vit", "zoo:vitt"], "unknown zoo model 'vitt'"),
        (["zoo:vit", "timm:resnet18,pretrained=false,colour=red"], r"unknown option\(s\) colour"),
        (["zoo:vit", "timm:resnet18,init_seed=x"], "not a whole number"),
        (["zoo:vit", "torchvision:resnet18,checkpoint=/no/such.pth"], "does not exist"),
        ([f"file:{tmp_path / 'mine.pt'},input_size=4:4"], "must be C:H:W"),
        (
            [f"file:{tmp_path / 'mine.pt'}", "timm:resnet18,name=mine"],
            r"two models are named 'mine' \(file:.*mine.pt and timm:resnet18,name=mine\)",
        ),
        (["timm:resnet18", "torchvision:resnet18"], "two models are named 'resnet18'"),
    ):
        with pytest.raises(ArchsimError, match=message):
            check_model_specs(specs)


def test_checkpoint_of_wrong_shape(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=3).state_dict(), path)
    with pytest.raises(ArchsimError, match="does not fit"):
        create_model(f"timm:resnet18,checkpoint={path}", cache=CacheStore(tmp_path))


@pytest.mark.parametrize("spec", ["timm:resnet18", "torchvision:resnet18"])
def test_pretrained_weights_out_of_reach_fail_in_seconds(spec, monkeypatch, tmp_path):
    """Neither cached nor reachable: one line in seconds, naming the fix (the hub client retried for 46 s per model)."""
    import time

    from archsim.models import sources

    # nothing listens: refused at once, with or without a network
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(sources, "_UNREACHABLE", {"download.pytorch.org": "refused by the test"})
    started = time.perf_counter()
    with pytest.raises(
        ArchsimError,
        match=r"pretrained weights of '.*resnet18' are not in the local cache and .* cannot be reached .*"
        r"pass checkpoint=PATH for local weights or pretrained=false",
    ):
        create_model(spec)
    assert time.perf_counter() - started < 10


def test_a_cut_short_model_file_says_so(tmp_path):
    torch.save(nn.Linear(4, 2), tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ArchsimError, match=r"cannot load model file .*cut.pt \(the file is cut short: a zip archive without its end"
    ):
        create_model(f"file:{tmp_path / 'cut.pt'}")
    with pytest.raises(ArchsimError, match=r"cannot read checkpoint .*cut.pt \(the file is cut short"):
        create_model(f"timm:resnet10t,pretrained=false,checkpoint={tmp_path / 'cut.pt'}")
