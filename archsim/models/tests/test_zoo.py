import torch

from archsim.cache import CacheStore
from archsim.models import ZOO, create_model, train_zoo


def test_zoo_training_is_the_same_in_process_and_in_parallel_workers(tmp_path):
    torch.set_num_threads(2)
    alone = create_model("zoo:resnet-s0", cache=CacheStore(tmp_path / "a"))
    assert torch.get_num_threads() == 2  # trained on one thread, the caller's count restored
    store = CacheStore(tmp_path / "b")
    train_zoo(
        ["zoo:resnet-s1", "zoo:resnet-s0,name=first", "timm:resnet50", "zoo:resnet-s0,epoch=3", "bogus"],
        store,
        processes=2,
    )
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


def test_standard_recipes_keep_the_cache_keys_from_before_adversarial_training():
    from archsim.models.train import Recipe

    # These fields, and only these, made the keys of the zoo's weights cached by earlier versions.
    assert set(Recipe(label_smoothing=0.1).describe()) == {
        "epochs",
        "lr",
        "weight_decay",
        "batch_size",
        "label_smoothing",
        "augment",
        "warmup_epochs",
        "trainer",
    }
    assert Recipe(adversarial_eps=0.1).describe()["adversarial_steps"] == 7


def test_adversarial_training_batches_are_pgd_images_of_the_model_in_training():
    from torch import nn

    from archsim.attacks import PGD, NoiseSource
    from archsim.models.train import adversarial_batch

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model = nn.Sequential(nn.Identity(), net).train()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 3, (16,))
    stats = net[1].running_mean.clone()
    attack = PGD(0.1, 7, rel_step=2.5 / 7)
    adv = adversarial_batch(model, net, attack, x, y, NoiseSource(0, range(16), x.shape[1:]))
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    model.eval()
    loss = nn.functional.cross_entropy
    # made against this model
    assert (loss(model(adv), y, reduction="none") > loss(model(x), y, reduction="none")).all()
    assert torch.equal(net[1].running_mean, stats)  # made in eval mode: the batch statistics are untouched
    assert not adv.requires_grad and all(p.requires_grad for p in net.parameters())
    model.train()
    assert adversarial_batch(model, net, attack, x, y, NoiseSource(0, range(16), x.shape[1:])).equal(adv)
    assert model.training


def test_the_default_run_leaves_out_the_adversarially_trained_resnet():
    from archsim.models import zoo_specs

    assert "zoo:resnet-adv" in [f"zoo:{name}" for name in ZOO] and "zoo:resnet-adv" not in zoo_specs()
    assert len(zoo_specs()) == 11 and ZOO["resnet-adv"].regime == "adversarial"


def test_a_zoo_regime_is_read_off_its_recipe():
    """The label says how the model was trained: vit, mixer and mobilenetv3 learn under augmentation (they were
    labelled standard, against the zoo's own table)."""
    from archsim.models import ZOO

    assert {
        name: ZOO[name].regime
        for name in ("resnet-s0", "resnet-ls", "resnet-aug", "vit", "mixer", "mobilenetv3", "resnet-adv")
    } == {
        "resnet-s0": "standard",
        "resnet-ls": "label-smoothing",
        "resnet-aug": "augmentation",
        "vit": "augmentation",
        "mixer": "augmentation",
        "mobilenetv3": "augmentation",
        "resnet-adv": "adversarial",
    }
    assert all(
        (entry.regime == "augmentation") == (entry.recipe.augment == "affine" and not entry.recipe.label_smoothing)
        for entry in ZOO.values()
        if not entry.recipe.adversarial_eps
    )


def test_the_torch_free_lists_of_schemes_and_zoo_names_match_the_registries():
    """archsim.specs keeps the scheme and zoo names, so the CLI refuses a typo before torch loads: they must stay
    equal."""
    from archsim.data.loaders import data_schemes
    from archsim.models import ZOO, model_schemes
    from archsim.specs import DATA_SCHEMES, MODEL_SCHEMES, ZOO_NAMES

    assert (
        ZOO_NAMES == tuple(ZOO)
        and set(MODEL_SCHEMES) == set(model_schemes())
        and set(DATA_SCHEMES) == set(data_schemes())
    )
