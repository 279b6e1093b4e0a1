from archsim.cache import CacheStore
from archsim.models import ZOO, create_model


def test_zoo_training_is_deterministic_for_a_seed(tmp_path):
    first = create_model("zoo:resnet-s0", cache=CacheStore(tmp_path / "a"))
    second = create_model("zoo:resnet-s0", cache=CacheStore(tmp_path / "b"))
    assert first.fingerprint == second.fingerprint
    assert first.info["eval_accuracy"] >= 0.95


def test_zoo_covers_the_required_families_seeds_and_regimes():
    entries = list(ZOO.values())
    assert len(entries) >= 10 and len({e.family for e in entries}) >= 5
    resnets = [e for e in entries if e.architecture == "resnet18" and not e.kwargs.get("block_args")]
    assert len({e.seed for e in resnets if e.regime == "standard"}) >= 3
    assert len({e.regime for e in resnets}) >= 2
