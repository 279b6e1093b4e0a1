import torch

from archsim.cache import CacheStore
from archsim.models import ZOO, create_model, train_zoo


def test_zoo_training_is_the_same_in_process_and_in_parallel_workers(tmp_path):
    torch.set_num_threads(2)
    alone = create_model("zoo:resnet-s0", cache=CacheStore(tmp_path / "a"))
    assert torch.get_num_threads() == 2  # trained on one thread, the caller's count restored
    store = CacheStore(tmp_path / "b")
    train_zoo(["zoo:resnet-s1", "zoo:resnet-s0,name=first", "timm:resnet50", "zoo:resnet-s0,epoch=3", "bogus"], store, processes=2)
    assert (store.misses, len(store.used)) == (2, 2)  # one entry per zoo model; other specs left to their loaders
    side_by_side = create_model("zoo:resnet-s0", cache=store)
    assert alone.fingerprint == side_by_side.fingerprint
    assert alone.info["eval_accuracy"] >= 0.95 and store.hits == 1
    before = store.misses
    train_zoo(["zoo:resnet-s0", "zoo:resnet-s1"], store)
    assert store.misses == before  # nothing to train


def test_zoo_covers_the_required_families_seeds_and_regimes():
    entries = list(ZOO.values())
    assert len(entries) >= 10 and len({e.family for e in entries}) >= 5
    resnets = [e for e in entries if e.architecture == "resnet18" and not e.kwargs.get("block_args")]
    assert len({e.seed for e in resnets if e.regime == "standard"}) >= 3
    assert len({e.regime for e in resnets}) >= 2
