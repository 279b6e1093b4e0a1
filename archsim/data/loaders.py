"""Data specs: ``digits``, ``imagefolder:PATH``, ``imagenet-val:PATH``, ``npz:PATH``.

Every loader returns an :class:`ImageSet` of uint8 images at one storage
resolution. Folder loaders pick the stratified subset from the labels first and
decode only the chosen files. Given a cache, the folder and ``npz`` loaders write
the chosen images into it batch by batch, on first use, and return a set read from
there in batches: a data set larger than memory runs, and a second run skips
decoding. A folder's set keeps its files (:class:`ImageFiles`), from which each
model's own view is decoded (:meth:`ImageSet.seen_by`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2.functional as TF
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from timm.data import ImageNetInfo
from torchvision.io import ImageReadMode, decode_image, read_file
from tqdm.auto import tqdm

from archsim.cache import CacheStore, digest
from archsim.data.imageset import (
    ImageSet,
    StoredImages,
    fingerprint_end,
    fingerprint_start,
    stratified_indices,
)
from archsim.data.views import View, apply_view, decode_rgb
from archsim.errors import ArchsimError, one_line
from archsim.specs import DATA_SCHEMES, Spec, parse_spec

DIGITS_SIZE = 32
DIGITS_SPLIT_SEED = 0
DIGITS_EVAL_FRACTION = 0.2
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_ROWS_PER_READ = 256


def load_data(
    spec: str,
    split: str = "eval",
    n_images: int | None = None,
    seed: int = 0,
    store: CacheStore | None = None,
    views: str = "shared",
) -> ImageSet:
    """Load the image set a data spec names.

    Parameters
    ----------
    spec : str
        ``digits`` (default data), ``imagefolder:PATH[,size=224][,classes=imagenet]``,
        ``imagenet-val:PATH[,labels=FILE][,size=224]`` or ``npz:PATH``.
    split : {"eval", "train"}
        Only ``digits`` has a training split (used to train the embedded zoo).
    n_images : int, optional
        Seeded, class-stratified subset of this size.
    seed : int
        Seed of the subset.
    store : CacheStore, optional
        Where folder and ``npz`` data are kept after their first read; the set is
        then read from there in batches instead of held in memory. ``digits`` is
        always in memory.
    views : {"shared", "own"}
        How models see the set (:meth:`ImageSet.seen_by`): ``own``, each through its own
        evaluation view; ``shared``, as stored.
    """
    parsed = parse_spec(spec, DATA_SCHEMES, bare=("digits",))
    if split not in ("eval", "train"):
        raise ArchsimError(f"unknown split {split!r}; use eval or train")
    if split == "train" and parsed.scheme != "digits":
        raise ArchsimError(f"data {spec!r} has no training split; only digits does")
    loader = _LOADERS[parsed.scheme]
    images = loader(parsed, split, n_images, seed, store)
    parsed.finish()
    return images.with_views(views)


def _digits(spec: Spec, split: str, n_images: int | None, seed: int, store: CacheStore | None) -> ImageSet:
    """scikit-learn's 8x8 digits (0..16) as 1-channel 32x32 uint8 images.

    The 80/20 train/eval split is fixed (seed 0, stratified) so that every run
    and the embedded zoo agree on which images are held out.
    """
    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    big = TF.resize(pixels, [DIGITS_SIZE, DIGITS_SIZE], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    train_idx, eval_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_EVAL_FRACTION, stratify=bunch.target, random_state=DIGITS_SPLIT_SEED
    )
    chosen = np.sort(train_idx if split == "train" else eval_idx)
    chosen = chosen[stratified_indices(bunch.target[chosen], n_images, seed)]
    classes = tuple(str(c) for c in range(10))
    return ImageSet(images[chosen], labels[chosen], classes, f"digits-{split}")


def _existing_dir(spec: Spec) -> Path:
    path = Path(spec.target).expanduser()
    if not spec.target:
        raise ArchsimError(f"data spec {spec.text!r} names no path; write {spec.scheme}:PATH")
    if not path.is_dir():
        raise ArchsimError(f"data folder {path} does not exist; check the path in {spec.text!r}")
    return path


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """ImageNet-1k's 1000 WordNet ids in their sorted order: class index i of every ImageNet classifier."""
    return tuple(ImageNetInfo().label_names())


def _imagefolder(spec: Spec, split: str, n_images: int | None, seed: int, store: CacheStore | None) -> ImageSet:
    root = _existing_dir(spec)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    mapping = spec.take("classes", "folders")
    if mapping == "folders":  # torchvision's ImageFolder: the sorted folders are the classes
        classes = tuple(folders)
    elif mapping == "imagenet":  # wnid folders of a part of ImageNet (Imagenette, ImageNet-100) keep their 1k index
        classes = imagenet_wnids()
    else:
        raise ArchsimError(f"classes={mapping} in {spec.text!r}: use classes=folders (the default) or classes=imagenet")
    index = {name: i for i, name in enumerate(classes)}
    strangers = [name for name in folders if name not in index]
    if strangers:
        raise ArchsimError(
            f"classes=imagenet needs ImageNet-1k WordNet ids as folder names, but {root} has {len(strangers)} "
            f"other folders (e.g. {strangers[0]!r}); rename them or drop classes=imagenet"
        )
    files, labels = [], []
    for name in folders:
        for file in sorted((root / name).rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(file)
                labels.append(index[name])
    if not files:
        raise ArchsimError(f"data folder {root} has no images in class sub-folders; expected {root}/CLASS/IMAGE.jpg")
    return _decode_subset(spec, files, np.array(labels), classes, n_images, seed, store)


def _imagenet_val(spec: Spec, split: str, n_images: int | None, seed: int, store: CacheStore | None) -> ImageSet:
    root = _existing_dir(spec)
    labels_path = spec.take("labels")
    if labels_path is None:
        candidates = [root / n for n in ("LOC_val_solution.csv", "labels.csv", "labels.txt", "val_labels.txt")]
        candidates += [root.parent / "LOC_val_solution.csv"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise ArchsimError(f"no labels file found for {root}; pass imagenet-val:{root},labels=FILE")
        labels_file = found[0]
    else:
        labels_file = Path(labels_path).expanduser()
        if not labels_file.is_file():
            raise ArchsimError(f"labels file {labels_file} does not exist; fix labels= in {spec.text!r}")
    by_stem = _read_val_labels(labels_file)
    files, labels = [], []
    for file in sorted(root.iterdir()):
        if file.suffix.lower() in IMAGE_SUFFIXES and file.stem in by_stem:
            files.append(file)
            labels.append(by_stem[file.stem])
    if not files:
        raise ArchsimError(f"no image in {root} has a label in {labels_file}; check that both name the same files")
    raw = np.array(labels, dtype=object)
    if all(isinstance(v, int) for v in raw):
        classes = tuple(str(i) for i in range(max(1000, max(raw) + 1)))
        index = np.array(raw, dtype=np.int64)
    else:
        # WordNet ids index ImageNet-1k's synsets in their sorted order, which timm ships: a labels
        # file that names only some of the classes (a subset of the set) still gets the standard index.
        wnids = imagenet_wnids()
        lookup = {w: i for i, w in enumerate(wnids)}
        unknown = sorted(set(v for v in raw if isinstance(v, str)) - lookup.keys())
        if unknown:
            raise ArchsimError(
                f"labels file {labels_file} names {len(unknown)} WordNet ids outside ImageNet-1k (e.g. "
                f"{unknown[0]!r}); "
                "use ImageNet-1k wnids or integer labels 0..999"
            )
        classes = wnids
        index = np.array([lookup[v] if isinstance(v, str) else v for v in raw], dtype=np.int64)
    return _decode_subset(spec, files, index, classes, n_images, seed, store)


def _read_val_labels(path: Path) -> dict[str, int | str]:
    """Map image stem -> label from ``name label`` lines, ``name,label`` CSV or Kaggle's LOC_val_solution.csv."""
    out: dict[str, int | str] = {}
    with path.open(newline="") as handle:
        for row in csv.reader(handle, delimiter="," if path.suffix == ".csv" else " "):
            row = [cell for cell in row if cell]
            if len(row) < 2 or row[0].lower() in ("imageid", "filename", "file"):
                continue
            label = row[1].split()[0]
            out[Path(row[0]).stem] = int(label) if label.isdigit() else label
    if not out:
        raise ArchsimError(f"labels file {path} has no 'filename label' rows")
    bad = [v for v in out.values() if isinstance(v, str) and not re.fullmatch(r"n\d{8}", v)]
    if bad:
        raise ArchsimError(
            f"labels file {path} has label {bad[0]!r}; labels must be class indices or WordNet ids like n01440764"
        )
    return out


def _decode_subset(
    spec: Spec,
    files: list[Path],
    labels: np.ndarray,
    classes: tuple[str, ...],
    n_images: int | None,
    seed: int,
    store: CacheStore | None,
) -> ImageSet:
    size = spec.take_int("size", 224)
    crop_pct = float(spec.take("crop_pct", "0.875"))
    if not 0 < crop_pct <= 1:
        raise ArchsimError(f"crop_pct={crop_pct} in {spec.text!r} must lie in (0, 1]")
    chosen = stratified_indices(labels, n_images, seed)

    def decoded() -> Iterator[np.ndarray]:
        with tqdm(total=len(chosen), desc=f"decode {spec.target}", unit="img", leave=False, disable=None) as progress:
            for start in range(0, len(chosen), _ROWS_PER_READ):
                batch = np.stack(
                    [_storage_image(files[i], size, crop_pct).numpy() for i in chosen[start : start + _ROWS_PER_READ]]
                )
                progress.update(len(batch))
                yield batch

    # The key is the files' bytes, not their names or times: a renamed or copied folder is the same data.
    source = ImageFiles([files[i] for i in chosen], spec.target)
    key = lambda: ("decoded", size, crop_pct, source.identity())  # noqa: E731
    return _image_set((len(chosen), 3, size, size), decoded, labels[chosen], classes, spec.text, store, key, source)


VIEW_REVISION = 1
"""Part of the cache key of every decoded view: raised when the decoding of a view changes."""
_VIEWS_IN_MEMORY = 4
"""Own views a set of files keeps in memory without a cache (each is the whole set at one model's size)."""


class ImageFiles:
    """The image files a set was decoded from, in the set's order, and the views of them that models see."""

    def __init__(self, files: list[Path], what: str) -> None:
        self.files, self.what = files, what
        self._contents: str | None = None
        self._in_memory: dict[View, ImageSet] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_in_memory": {}}  # a worker decodes its own; the arrays would travel otherwise

    def identity(self) -> str:
        """SHA-256 of the files' bytes, in order (read once per process)."""
        if self._contents is None:
            self._contents = _contents_digest(self.files, self.what)
        return self._contents

    def seen_by(self, view: View, of: ImageSet, store: CacheStore | None, limit: int | None) -> ImageSet:
        """The files through ``view`` (the first ``limit`` of them, in memory, if given), labelled as ``of``."""
        files = self.files if limit is None else self.files[:limit]
        labels = of.labels.numpy()[: len(files)]

        def decoded() -> Iterator[np.ndarray]:
            desc = f"decode {self.what} for {view.label()}"
            with tqdm(total=len(files), desc=desc, unit="img", leave=False, disable=None) as progress:
                for start in range(0, len(files), _ROWS_PER_READ):
                    batch = np.stack([viewed_image(f, view).numpy() for f in files[start : start + _ROWS_PER_READ]])
                    progress.update(len(batch))
                    yield batch

        shape = (len(files), 3, *view.size)
        if limit is not None:
            return _image_set(shape, decoded, labels, of.classes, of.name, None, lambda: ())
        if store is None:
            if view not in self._in_memory:
                if len(self._in_memory) >= _VIEWS_IN_MEMORY:
                    self._in_memory.pop(next(iter(self._in_memory)))
                self._in_memory[view] = _image_set(shape, decoded, labels, of.classes, of.name, None, lambda: ())
            return self._in_memory[view]
        key = lambda: ("view", VIEW_REVISION, view.describe(), self.identity())  # noqa: E731
        return _image_set(shape, decoded, labels, of.classes, of.name, store, key)


def _image_set(
    shape: tuple[int, ...],
    batches: Callable[[], Iterator[np.ndarray]],
    labels: np.ndarray,
    classes: tuple[str, ...],
    name: str,
    store: CacheStore | None,
    key: Callable[[], tuple],
    files: ImageFiles | None = None,
) -> ImageSet:
    """The set ``batches()`` yields, in memory, or through ``store`` under ``key()`` (plus the labels) if given, written
    there when first read."""
    labels = np.asarray(labels, dtype=np.int64)
    if store is None or not shape[0]:  # an empty set fails ImageSet's own check before anything is stored
        images = torch.empty(shape, dtype=torch.uint8)
        start = 0
        for batch in batches():
            images[start : start + len(batch)] = torch.from_numpy(batch)
            start += len(batch)
        return ImageSet(images, torch.from_numpy(labels), classes, name, files)

    def entry():
        fingerprint = fingerprint_start(shape)

        def hashed() -> Iterator[np.ndarray]:
            for batch in batches():
                fingerprint.update(np.ascontiguousarray(batch))
                yield batch

        return store.get_or_stream(
            "data",
            digest("data", *key(), hashlib.sha256(labels.tobytes()).hexdigest()),
            "images",
            shape,
            np.uint8,
            hashed,
            lambda: {"labels": labels, "fingerprint": np.array(fingerprint_end(fingerprint, labels))},
        )

    return ImageSet(StoredImages(entry, shape), torch.from_numpy(labels), classes, name, files)


def _contents_digest(files: list[Path], what: str) -> str:
    h = hashlib.sha256()
    for file in tqdm(files, desc=f"hash {what}", unit="file", leave=False, disable=None):
        with file.open("rb") as handle:
            h.update(hashlib.file_digest(handle, "sha256").digest())  # in chunks: an npz file can be gigabytes
    return h.hexdigest()


def decoder_message(error: Exception) -> str:
    """torchvision's reader or decoder error without the function and source location of its build ("decode_jpeg,
    /__w/vision/...cpp:171, Image is incomplete or truncated" -> "Image is incomplete or truncated")."""
    parts = [part.strip() for part in str(error).split(",")]
    meaningful = [
        part
        for part in parts
        if part and not re.search(r"\.(cpp|h|c):\d+$", part) and not re.fullmatch(r"(decode|read)_\w+", part)
    ]
    return ", ".join(meaningful) or type(error).__name__


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(data: torch.Tensor, file: Path) -> None:
    """A one-line error unless ``data`` (the bytes of ``file``, uint8), if a PNG, reads whole with Pillow (chunk
    checksums and the compressed data).

    torchvision 0.29's PNG decoder ends the process with a segmentation fault on a damaged data chunk (found by
    the fuzz tests: libpng's "IDAT: incorrect data check"), so a PNG is read with Pillow first, which raises instead.
    """
    raw = data.numpy()
    if raw[: len(PNG_SIGNATURE)].tobytes() != PNG_SIGNATURE:
        return
    try:
        with PIL.Image.open(io.BytesIO(raw)) as image:
            image.verify()
        with PIL.Image.open(io.BytesIO(raw)) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - Pillow raises SyntaxError, OSError, ValueError... on damaged files
        raise ArchsimError(f"cannot decode image {file} ({one_line(error)}); remove or replace it") from None


def viewed_image(file: Path, view: View) -> torch.Tensor:
    """``file`` as a model with ``view`` sees it (uint8 ``[3, H, W]``): decoded by Pillow and converted to RGB as in
    timm's image dataset, then resized and cropped as its evaluation transform does
    (:func:`archsim.data.views.apply_view`)."""
    data = _read_bytes(file)
    try:
        image = decode_rgb(data.numpy().tobytes())
    except Exception as error:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError... on damaged files
        raise ArchsimError(f"cannot decode image {file} ({one_line(error)}); remove or replace it") from None
    return apply_view(image, view)


def _read_bytes(file: Path) -> torch.Tensor:
    try:
        return read_file(str(file))
    except RuntimeError as error:
        raise ArchsimError(f"cannot read image {file} ({decoder_message(error)}); remove or replace it") from None


def _storage_image(file: Path, size: int, crop_pct: float) -> torch.Tensor:
    """The shared storage of a folder (``views="shared"``): shorter side to size/crop_pct, centre crop.

    The file is read once, by torchvision: the PNG check and the decoder both take its bytes from memory (given the
    path, Pillow read a PNG twice and torchvision a third time).
    """
    data = _read_bytes(file)
    check_png(data, file)
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise ArchsimError(f"cannot decode image {file} ({decoder_message(error)}); remove or replace it") from None
    image = TF.resize(image, [int(round(size / crop_pct))], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(image, [size, size])


def _npz(spec: Spec, split: str, n_images: int | None, seed: int, store: CacheStore | None) -> ImageSet:
    path = Path(spec.target).expanduser()
    if not path.is_file():
        raise ArchsimError(f"npz file {path} does not exist; check the path in {spec.text!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name.removesuffix(".npy") for name in archive.namelist()]
            if "images" not in names or "labels" not in names:
                raise ArchsimError(f"npz file {path} needs arrays 'images' and 'labels', has {names}")
            with archive.open("images.npy") as member:
                shape, fortran_order, dtype = _npy_header(member)
            labels = _read_npy(archive, "labels")
            classes = tuple(str(c) for c in _read_npy(archive, "classes")) if "classes" in names else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ArchsimError(f"cannot read npz file {path}: {error}") from None
    if dtype != np.uint8:
        raise ArchsimError(f"npz file {path}: images are {dtype}; store them as uint8 0..255")
    if fortran_order:
        raise ArchsimError(f"npz file {path}: images are stored in Fortran order; save np.ascontiguousarray(images)")
    layout = to_nchw(shape, f"npz file {path}")
    labels = check_labels(np.asarray(labels).reshape(-1), f"npz file {path}", classes)
    if len(labels) != shape[0]:
        raise ArchsimError(f"npz file {path}: {shape[0]} images but {len(labels)} labels")
    if classes is None:
        classes = tuple(str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0))
    chosen = stratified_indices(labels, n_images, seed) if len(labels) else np.arange(0)
    wanted = np.zeros(len(labels), dtype=bool)
    wanted[chosen] = True

    def rows() -> Iterator[np.ndarray]:
        # Read in order, keeping the chosen rows: the file's images are never all in memory (even compressed).
        row_bytes = int(np.prod(shape[1:]))
        try:
            with zipfile.ZipFile(path) as archive, archive.open("images.npy") as member:
                _npy_header(member)
                for start in tqdm(
                    range(0, shape[0], _ROWS_PER_READ),
                    desc=f"read {path.name}",
                    unit="batch",
                    leave=False,
                    disable=None,
                ):
                    count = min(_ROWS_PER_READ, shape[0] - start)
                    raw = member.read(count * row_bytes)
                    if len(raw) != count * row_bytes:
                        raise EOFError(f"images end before row {start + len(raw) // row_bytes}")
                    keep = wanted[start : start + count]
                    if keep.any():
                        yield layout(np.frombuffer(raw, dtype=np.uint8).reshape(count, *shape[1:])[keep])
                member.read()  # reaching the end checks the archive's CRC-32
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise ArchsimError(f"cannot read npz file {path}: {error}") from None

    stored_shape = (len(chosen), *layout(np.empty((0, *shape[1:]), np.uint8)).shape[1:])

    def key() -> tuple[str, str, str]:
        return "npz", _contents_digest([path], path.name), hashlib.sha256(chosen.astype(np.int64).tobytes()).hexdigest()

    return _image_set(stored_shape, rows, labels[chosen], classes, spec.text, store, key)


MAX_CLASSES = 1_000_000
"""Most classes a data set may have (ImageNet-21k has 21,843): class names are made for every index up to the
largest."""


def check_labels(labels: np.ndarray, source: str, classes: tuple[str, ...] | None = None) -> np.ndarray:
    """Class indices as int64: whole numbers (integers, or floats holding whole numbers), non-negative, below
    ``len(classes)`` where the classes are named, else below :data:`MAX_CLASSES`; a one-line error otherwise."""
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise ArchsimError(
                f"{source}: labels must be whole class indices; some are fractional or not finite (store integers)"
            )
    elif labels.dtype.kind not in "iu":
        raise ArchsimError(
            f"{source}: labels are {labels.dtype} ({labels.dtype.kind!r} kind); store integer class indices 0..C-1 "
            "and the class names, if any, as an array 'classes'"
        )
    if not len(labels):
        return labels.astype(np.int64)
    if labels.min() < 0:
        raise ArchsimError(f"{source}: labels must be non-negative class indices")
    limit = len(classes) if classes is not None else MAX_CLASSES
    if labels.max() >= limit:
        why = f"its {len(classes)} classes" if classes is not None else f"{MAX_CLASSES:,} classes, archsim's limit"
        raise ArchsimError(f"{source}: a label is {int(labels.max())}, beyond {why}; labels are class indices 0..C-1")
    return labels.astype(np.int64)


def _npy_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(member)


def _read_npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(f"{name}.npy") as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def to_nchw(shape: tuple[int, ...], source: str) -> Callable[[np.ndarray], np.ndarray]:
    """How to turn rows of images stored with ``shape`` into [n, C, H, W] rows; a one-line error naming ``source``
    where the shape is none of the layouts archsim reads."""
    if len(shape) == 3:
        return lambda rows: rows[:, None]
    if len(shape) == 4 and shape[1] in (1, 3):
        return lambda rows: rows
    if len(shape) == 4 and shape[3] in (1, 3):
        return lambda rows: np.ascontiguousarray(rows.transpose(0, 3, 1, 2))
    raise ArchsimError(
        f"{source}: images of shape {shape} are not [N,H,W], [N,C,H,W] or [N,H,W,C] with 1 or 3 channels"
    )


_LOADERS: dict[str, Callable[[Spec, str, int | None, int, CacheStore | None], ImageSet]] = {
    "digits": _digits,
    "imagefolder": _imagefolder,
    "imagenet-val": _imagenet_val,
    "npz": _npz,
}


def register_loader(scheme: str, loader: Callable[[Spec, str, int | None, int, CacheStore | None], ImageSet]) -> None:
    """Make ``loader`` read the data specs of ``scheme`` (one of :data:`archsim.specs.DATA_SCHEMES`)."""
    _LOADERS[scheme] = loader


def data_schemes() -> tuple[str, ...]:
    """The data spec schemes with a loader (``digits``, ``npz``, ...)."""
    return tuple(_LOADERS)
