import shutil

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from archsim.cache import CacheStore
from archsim.data import load_data, stratified_indices
from archsim.data.imageset import StoredImages
from archsim.errors import ArchsimError


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, evaluation = load_data("digits", split="train"), load_data("digits")
    assert len(train) + len(evaluation) == 1797
    assert evaluation.images.shape[1:] == (1, 32, 32) and evaluation.images.dtype == torch.uint8
    counts = evaluation.labels.bincount()
    assert counts.min() >= 35 and counts.max() <= 37
    assert load_data("digits").fingerprint == evaluation.fingerprint
    train_rows = {row.tobytes() for row in train.images.numpy()}
    assert not any(row.tobytes() in train_rows for row in evaluation.images.numpy()[:50])


def test_subset_is_seeded_and_stratified():
    a = load_data("digits", n_images=50, seed=1)
    b = load_data("digits", n_images=50, seed=1)
    c = load_data("digits", n_images=50, seed=2)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert (a.labels.bincount() == 5).all()


def test_stratified_indices_errors():
    with pytest.raises(ArchsimError, match="smaller than the 3 classes"):
        stratified_indices(np.array([0, 1, 2, 0, 1, 2]), 2, 0)
    with pytest.warns(UserWarning, match="--n-images 7 is more than the 6 images there are; all of them are used"):
        assert stratified_indices(np.array([0, 1, 2, 0, 1, 2]), 7, 0).tolist() == list(range(6))


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.full((3, 30, 40), value, dtype=torch.uint8), str(path))


def test_imagefolder(tmp_path):
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", value)
    data = load_data(f"imagefolder:{tmp_path},size=16")
    assert data.classes == ("cat", "dog") and data.images.shape == (6, 3, 16, 16)
    assert data.images[data.labels == 1].float().mean() == pytest.approx(200, abs=1)


def test_imagefolder_of_imagenet_classes(tmp_path):
    """Folders named by wnids (Imagenette's layout) index ImageNet-1k with classes=imagenet, and give a hint without
    it."""
    from archsim.transfer.stages import check_compatible

    for wnid in ("n15075141", "n01440764"):
        _png(tmp_path / wnid / "a.png", 10)
    by_folder = load_data(f"imagefolder:{tmp_path},size=8")
    assert by_folder.labels.tolist() == [0, 1] and by_folder.num_classes == 2
    imagenet = load_data(f"imagefolder:{tmp_path},size=8,classes=imagenet")
    assert (
        imagenet.labels.tolist() == [0, 999]
        and imagenet.num_classes == 1000
        and imagenet.fingerprint != by_folder.fingerprint
    )

    class Thousand:
        name, num_outputs = "m", 1000

    with pytest.raises(
        ArchsimError,
        match="outputs 1000 classes but data .* has 2; its class folders are ImageNet-1k WordNet ids: add "
        ",classes=imagenet",
    ):
        check_compatible(Thousand(), by_folder)
    check_compatible(Thousand(), imagenet)
    (tmp_path / "cat").mkdir()
    with pytest.raises(
        ArchsimError, match="has 1 other folders \\(e.g. 'cat'\\); rename them or drop classes=imagenet"
    ):
        load_data(f"imagefolder:{tmp_path},size=8,classes=imagenet")
    with pytest.raises(ArchsimError, match="use classes=folders \\(the default\\) or classes=imagenet"):
        load_data(f"imagefolder:{tmp_path},classes=wnid")


def test_imagenet_val_with_labels_file(tmp_path):
    for i in range(4):
        _png(tmp_path / f"ILSVRC2012_val_{i:08d}.png", 50 * i)
    (tmp_path / "labels.txt").write_text("\n".join(f"ILSVRC2012_val_{i:08d}.JPEG {i * 7}" for i in range(4)))
    data = load_data(f"imagenet-val:{tmp_path},size=8")
    assert data.labels.tolist() == [0, 7, 14, 21] and data.num_classes == 1000


def test_imagenet_val_with_wordnet_ids_of_some_classes(tmp_path):
    """Kaggle's LOC_val_solution.csv layout for a subset naming 3 synsets: they keep their ImageNet-1k index."""
    wnids = ["n01440764", "n01443537", "n15075141"]  # the first, second and last of the sorted 1000
    for i in range(3):
        _png(tmp_path / f"ILSVRC2012_val_{i:08d}.png", 50 * i)
    rows = [f"ILSVRC2012_val_{i:08d},{wnid} 12 34 56 78" for i, wnid in enumerate(wnids)]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(["ImageId,PredictionString", *rows]))
    data = load_data(f"imagenet-val:{tmp_path},size=8")
    assert data.labels.tolist() == [0, 1, 999] and data.num_classes == 1000 and data.classes[999] == "n15075141"
    (tmp_path / "LOC_val_solution.csv").write_text(
        "\n".join(["ImageId,PredictionString", *rows, "ILSVRC2012_val_00000003,n99999999 1 2 3 4"])
    )
    _png(tmp_path / "ILSVRC2012_val_00000003.png", 10)
    with pytest.raises(ArchsimError, match="names 1 WordNet ids outside ImageNet-1k .*'n99999999'"):
        load_data(f"imagenet-val:{tmp_path},size=8")


def test_npz_layouts(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 1, 2, 0, 1, 2]))
    data = load_data(f"npz:{tmp_path / 'd.npz'}")
    assert data.images.shape == (6, 3, 12, 12) and data.num_classes == 3
    assert np.array_equal(data.images[0].permute(1, 2, 0).numpy(), images[0])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("imagefolder:/no/such/dir", "does not exist"),
        ("npz:/no/such.npz", "does not exist"),
        ("imagefolder:", "names no path"),
        ("mnist", "unknown scheme"),
    ],
)
def test_bad_data_specs(spec, message):
    with pytest.raises(ArchsimError, match=message):
        load_data(spec)


def test_empty_folder(tmp_path):
    (tmp_path / "cls").mkdir()
    with pytest.raises(ArchsimError, match="has no images"):
        load_data(f"imagefolder:{tmp_path}")


def test_npz_float_images_refused(tmp_path):
    np.savez(tmp_path / "f.npz", images=np.zeros((2, 4, 4), dtype=np.float32), labels=np.array([0, 1]))
    with pytest.raises(ArchsimError, match="uint8"):
        load_data(f"npz:{tmp_path / 'f.npz'}")


def test_stored_folder_set_matches_the_in_memory_one_and_decodes_once(tmp_path):
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(5):
            _png(tmp_path / "d" / cls / f"{i}.png", value + i)
    spec = f"imagefolder:{tmp_path / 'd'},size=16"
    store = CacheStore(tmp_path / "c")
    memory, stored = load_data(spec, n_images=6), load_data(spec, n_images=6, store=store)
    # Decoded on first use: a run whose models all take their own views never decodes the shared storage.
    assert isinstance(stored.images, StoredImages) and store.misses == 0
    assert stored.images.shape == memory.images.shape and store.misses == 0
    assert stored.fingerprint == memory.fingerprint and store.misses == 1
    assert stored.fingerprint == memory.fingerprint and torch.equal(stored.labels, memory.labels)
    assert torch.equal(torch.cat(list(stored.batches(4))), memory.images)
    assert torch.equal(stored.subset([4, 1, 4]).images, memory.images[[4, 1, 4]]) and torch.equal(
        stored.subset([1, 4]).labels, memory.labels[[1, 4]]
    )
    # A copied folder is the same data (the key is the files' bytes); a changed file is not.
    shutil.copytree(tmp_path / "d", tmp_path / "copy")
    copied = load_data(f"imagefolder:{tmp_path / 'copy'},size=16", n_images=6, store=store)
    assert copied.fingerprint == memory.fingerprint
    assert (store.hits, store.misses) == (1, 1)
    _png(tmp_path / "copy" / "dog" / "0.png", 0)
    changed = load_data(f"imagefolder:{tmp_path / 'copy'},size=16", store=store)
    assert changed.fingerprint != load_data(f"imagefolder:{tmp_path / 'd'},size=16").fingerprint and store.misses == 2


@pytest.mark.parametrize("layout", ["nhwc", "nhw", "nchw"])
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_is_read_in_batches_with_the_same_result(tmp_path, layout, compressed, monkeypatch):
    monkeypatch.setattr("archsim.data.loaders._ROWS_PER_READ", 7)  # many reads, a subset spread across them
    shape = {"nhwc": (40, 6, 5, 3), "nhw": (40, 6, 5), "nchw": (40, 3, 6, 5)}[layout]
    images = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    labels = np.arange(40) % 4
    (np.savez_compressed if compressed else np.savez)(tmp_path / "d.npz", images=images, labels=labels)
    expected = {"nhwc": lambda: images.transpose(0, 3, 1, 2), "nhw": lambda: images[:, None], "nchw": lambda: images}[
        layout
    ]()
    chosen = stratified_indices(labels, 12, 3)
    memory = load_data(f"npz:{tmp_path / 'd.npz'}", n_images=12, seed=3)
    stored = load_data(f"npz:{tmp_path / 'd.npz'}", n_images=12, seed=3, store=CacheStore(tmp_path / "c"))
    assert np.array_equal(memory.images.numpy(), expected[chosen]) and np.array_equal(
        memory.labels.numpy(), labels[chosen]
    )
    assert stored.fingerprint == memory.fingerprint
    assert np.array_equal(torch.cat(list(stored.batches(5))).numpy(), expected[chosen])


def test_a_stratified_draw_keeps_a_class_of_one_image():
    # scikit-learn cannot stratify a class of one image: the draw still takes every class, in proportion.
    labels = np.array([c for c in range(9) for _ in range(20)] + [9])
    for seed in range(5):
        chosen = stratified_indices(labels, 30, seed)
        counts = np.bincount(labels[chosen], minlength=10)
        assert len(chosen) == 30 == len(set(chosen.tolist())) and counts[9] == 1
        assert set(counts[:9].tolist()) <= {3, 4} and counts.sum() == 30
    assert not np.array_equal(stratified_indices(labels, 30, 0), stratified_indices(labels, 30, 1))  # seeded
    # As many images as classes: one of each.
    assert np.bincount(labels[stratified_indices(labels, 10, 0)]).tolist() == [1] * 10


def test_npz_errors_are_one_line(tmp_path):
    np.savez(tmp_path / "short.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.array([0, 1]))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    np.savez(
        tmp_path / "fortran.npz", images=np.asfortranarray(np.zeros((3, 4, 4, 3), np.uint8)), labels=np.array([0, 1, 2])
    )
    for name, message in (
        ("short", "3 images but 2 labels"),
        ("junk", "cannot read npz"),
        ("fortran", "Fortran order"),
    ):
        with pytest.raises(ArchsimError, match=message) as caught:
            load_data(f"npz:{tmp_path / name}.npz", store=CacheStore(tmp_path / "c"))
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "c" / "data").exists()  # nothing half-made is stored


@pytest.mark.parametrize(
    "labels,message",
    [
        (np.array(["cat", "dog", "cat"]), "labels are <U3 .* store integer class indices"),
        (np.array([0.0, 1.5, 2.0]), "some are fractional or not finite"),
        (np.array([0.0, np.nan, 2.0]), "some are fractional or not finite"),
        (
            np.array([0, 1, 2**40]),
            "a label is 1099511627776, beyond 1,000,000 classes",
        ),  # once: range(2^40) class names, all memory
        (np.array([0, -1, 2]), "non-negative class indices"),
    ],
)
def test_npz_labels_are_checked_when_the_data_is_loaded(tmp_path, labels, message):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 4, 4), np.uint8), labels=labels)
    with pytest.raises(ArchsimError, match=message):
        load_data(f"npz:{tmp_path / 'd.npz'}")
    np.savez(
        tmp_path / "named.npz",
        images=np.zeros((3, 4, 4), np.uint8),
        labels=np.array([0, 1, 2]),
        classes=np.array(["a", "b"]),
    )
    with pytest.raises(ArchsimError, match="a label is 2, beyond its 2 classes"):
        load_data(f"npz:{tmp_path / 'named.npz'}")


def test_npz_float_labels_holding_whole_numbers_are_class_indices(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.array([0.0, 2.0, 1.0]))
    assert load_data(f"npz:{tmp_path / 'd.npz'}").labels.tolist() == [0, 2, 1]


def test_an_unknown_data_scheme_shows_the_forms_that_work():
    with pytest.raises(ArchsimError, match=r"use one of: digits, imagefolder:\.\.\., imagenet-val:\.\.\., npz:\.\.\.$"):
        load_data("nosuch:x")


def test_a_corrupt_image_is_named_without_the_decoders_source_location(tmp_path):
    from torchvision.io import encode_jpeg

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _png(tmp_path / "a" / "fine.png", 10)
    data = encode_jpeg(torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8)).numpy().tobytes()
    (tmp_path / "b" / "cut.jpg").write_bytes(data[: len(data) // 2] + b"garbage")
    with pytest.raises(ArchsimError) as caught:
        load_data(f"imagefolder:{tmp_path},size=8")
    message = str(caught.value)
    assert (
        message.startswith(f"cannot decode image {tmp_path / 'b' / 'cut.jpg'} (") and "remove or replace it" in message
    )
    assert ".cpp" not in message and "/__w/" not in message
    (tmp_path / "b" / "cut.jpg").write_bytes(b"")  # empty
    with pytest.raises(
        ArchsimError, match=r"^cannot read image \S*cut\.jpg \(Expected a non empty file\); remove or replace it$"
    ):
        load_data(f"imagefolder:{tmp_path},size=8")


def test_a_damaged_png_is_one_line_not_a_crash(tmp_path):
    """torchvision 0.29 crashes the process on a PNG whose data chunk is damaged; archsim reads PNGs with Pillow
    first and answers in one line. Run in a child process: were the guard gone, the crash would end the suite."""
    import subprocess
    import sys

    from torchvision.io import encode_png

    torch.manual_seed(0)
    png = bytearray(encode_png(torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8)).numpy().tobytes())
    png[100 % len(png)] ^= 0xFF  # inside the IDAT chunk: its checksum and the zlib stream no longer match
    for cls in "abcdefghij":  # ten classes, as the models have
        (tmp_path / "set" / cls).mkdir(parents=True)
        (tmp_path / "set" / cls / "good.png").write_bytes(bytes(encode_png(torch.zeros((3, 4, 4), dtype=torch.uint8))))
    (tmp_path / "set" / "a" / "bad.png").write_bytes(bytes(png))
    # Shared storage is decoded by torchvision (after a check by Pillow), own views by Pillow: both answer in one line.
    for views in ("shared", "own"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "archsim.cli",
                "run",
                "--models",  # random weights: nothing to train before the bad file is met
                "timm:resnet18,pretrained=false,num_classes=10,init_seed=1 "
                "timm:resnet18,pretrained=false,num_classes=10,init_seed=2,name=other",
                "--data",
                f"imagefolder:{tmp_path / 'set'},size=8",
                "--views",
                views,
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / views),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: cannot decode image") and "bad.png" in last, (views, done.stderr[-2000:])
