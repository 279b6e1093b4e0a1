"""Does adversarial transferability indicate knowledge transferability? The data-overlap
experiment of Liang et al. (docs/method.md#knowledge) on the bundled digits.

Target task: digits 0-3. The digits training split is cut in two stratified halves,
standing in for the paper's two data sets: sources learn from the first half,
the target task (the reference target model and the last-layer fits) uses the
second. Each source is a zoo architecture trained from scratch on 4 classes of
which 0, 1, 2, 3 or 4 (0-100 %) are target classes, the rest from digits 4-9.

Per source S and the target model T, on the evaluation images of digits 0-3 that T
classifies correctly (both directions use the same images):

- the attack is the run's L-inf PGD on cross-entropy against each model's *own
  prediction* (S knows none of the target labels), with random start;
- alpha_1, alpha_2 (unsquared) and the combined score from the logit deviations,
  S->T and T->S, and the product alpha_1 * alpha_2;
- T's adversarial loss: its cross-entropy on the true labels under S's attack;
- SAT between S and T where T's "fooled" is a wrong label and S's is a changed
  prediction (S has no true label in its classes);
- knowledge transferability: S's last layer replaced by a multinomial logistic
  regression (scikit-learn) trained on S's frozen penultimate features of the
  target task's training half; its accuracy on the evaluation images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from archsim.attacks import Attack, create_attack
from archsim.cache import CacheStore, atomic_write_text, check_cache, digest
from archsim.data import ImageSet, load_data
from archsim.data.imageset import stratified_indices
from archsim.errors import ArchsimError, ParameterError
from archsim.knowledge.alphas import alpha_1, alpha_2
from archsim.measures import DEFAULT_EPS_S, sat_value
from archsim.measures.comparison import correlate
from archsim.models.features import penultimate_features
from archsim.models.parallel import train_side_by_side
from archsim.models.train import (
    Recipe,
    arrays_to_state,
    state_to_arrays,
    train_classifier,
)
from archsim.models.wrapper import SimModel
from archsim.models.zoo import ZOO, training_cost
from archsim.transfer import predict

TARGET_CLASSES = (0, 1, 2, 3)
OTHER_CLASSES = (4, 5, 6, 7, 8, 9)
OVERLAPS = (0, 25, 50, 75, 100)
ARCHITECTURES = ("resnet-s0", "mixer", "convnext")
TARGET_ARCHITECTURE = "resnet-s0"
TARGET_SEED = 1000
MIN_TRAIN_PER_CLASS = 5
"""Fewest target-task training images per class for the last-layer fit."""
MIN_TEST_IMAGES = 10
METRICS = ("alpha_1_S_T", "alpha_2_S_T", "alpha_combined_S_T", "alpha_product_S_T", "sat", "target_adv_loss")


def check_same_input(source: SimModel, target: SimModel, images: torch.Tensor) -> None:
    """One-line error unless both models take ``images`` (the alphas compare them on the same inputs)."""
    channels = images.shape[1]
    for model in (source, target):
        wanted = model.preprocess.channels
        if wanted != channels and {wanted, channels} != {1, 3}:
            raise ArchsimError(
                f"models {source.name} and {target.name} have incompatible input spaces: {model.name} takes "
                f"{wanted}-channel images, "
                f"the data has {channels}; compare models that take the same images"
            )


def transfer_accuracy(
    source: SimModel, train: ImageSet, test: ImageSet, *, seed: int = 0, batch_size: int = 256
) -> float:
    """Accuracy (%) on ``test`` of ``source`` with its last layer replaced by a linear classifier
    trained on ``train`` (only that layer learns; the rest of the network stays frozen)."""
    counts = np.bincount(train.labels.numpy(), minlength=train.num_classes)
    present = sorted(set(test.labels.tolist()))
    thin = [c for c in present if counts[c] < MIN_TRAIN_PER_CLASS]
    if thin:
        raise ArchsimError(
            f"the target task has {int(counts[thin[0]])} training images of class {train.classes[thin[0]]}; "
            f"the last-layer fit needs at least {MIN_TRAIN_PER_CLASS} per class: give it more data"
        )
    features = penultimate_features(source, train.images, batch_size).numpy()
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    head.fit(features, train.labels.numpy())
    predicted = head.predict(penultimate_features(source, test.images, batch_size).numpy())
    return float((predicted == test.labels.numpy()).mean() * 100)


def pair_transferability(
    source: SimModel,
    target: SimModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    *,
    seed: int = 0,
    batch_size: int = 128,
    eps_s: float = DEFAULT_EPS_S,
) -> dict[str, float]:
    """alpha_1, alpha_2, combined and product (S->T and T->S), the target's adversarial loss and
    SAT, on the ``images`` the target classifies correctly (``labels``: the target task's).

    Each model is attacked against its own prediction.
    """
    check_same_input(source, target, images)
    clean_t, clean_s = predict(target, images, batch_size), predict(source, images, batch_size)
    correct = clean_t.argmax(-1) == labels
    if int(correct.sum()) < MIN_TEST_IMAGES:
        raise ArchsimError(
            f"{target.name} classifies only {int(correct.sum())} of the {len(images)} test images correctly; "
            f"the alphas need at least {MIN_TEST_IMAGES}: give more test images"
        )
    x, clean_t, clean_s, y = images[correct], clean_t[correct], clean_s[correct], labels[correct]
    adv_s = attack(source, x, clean_s.argmax(-1), seed, batch_size)
    adv_t = attack(target, x, clean_t.argmax(-1), seed, batch_size)
    t_on_s, t_on_t = predict(target, adv_s, batch_size), predict(target, adv_t, batch_size)
    s_on_s, s_on_t = predict(source, adv_s, batch_size), predict(source, adv_t, batch_size)
    d_st, d_tt = (t_on_s - clean_t).numpy(), (t_on_t - clean_t).numpy()
    d_ts, d_ss = (s_on_t - clean_s).numpy(), (s_on_s - clean_s).numpy()
    row: dict[str, float] = {"test_images": int(len(x))}
    for direction, (own_a, cross, own_b) in {"S_T": (d_ss, d_st, d_tt), "T_S": (d_tt, d_ts, d_ss)}.items():
        per_image = alpha_1(cross, own_b)
        row[f"alpha_1_{direction}"] = float(np.nanmean(per_image))
        row[f"alpha_2_{direction}"] = alpha_2(own_a, cross)
        # images without an alpha_1 left out, as in its mean
        row[f"alpha_combined_{direction}"] = alpha_2(own_a, cross, per_image)
        row[f"alpha_product_{direction}"] = row[f"alpha_1_{direction}"] * row[f"alpha_2_{direction}"]
    row["target_adv_loss"] = float(torch.nn.functional.cross_entropy(t_on_s, y))
    fooled_t = (t_on_s.argmax(-1) != y).numpy()
    fooled_s = (s_on_t.argmax(-1) != clean_s.argmax(-1)).numpy()
    row["sat"] = float(sat_value(fooled_t.sum() + fooled_s.sum(), len(x), eps_s))
    return row


def source_classes(overlap: int) -> tuple[int, ...]:
    """The 4 classes of a source sharing ``overlap`` % of the target task's classes."""
    if overlap not in OVERLAPS:
        raise ArchsimError(f"overlap {overlap} % is not one of {', '.join(map(str, OVERLAPS))}")
    shared = overlap * len(TARGET_CLASSES) // 100
    return TARGET_CLASSES[:shared] + OTHER_CLASSES[: len(TARGET_CLASSES) - shared]


def _restrict(data: ImageSet, classes: tuple[int, ...]) -> ImageSet:
    """The images of ``classes``, relabelled 0..len(classes)-1 in that order."""
    labels = data.labels.numpy()
    keep = np.flatnonzero(np.isin(labels, classes))
    relabel = {c: i for i, c in enumerate(classes)}
    return ImageSet(
        data.images[keep],
        torch.as_tensor([relabel[int(v)] for v in labels[keep]]),
        tuple(data.classes[c] for c in classes),
        f"{data.name}[{','.join(map(str, classes))}]",
    )


def _halves(train: ImageSet, seed: int) -> tuple[ImageSet, ImageSet]:
    first = stratified_indices(train.labels.numpy(), len(train) // 2, seed)
    second = np.setdiff1d(np.arange(len(train)), first)
    return train.subset(first), train.subset(second)


def _recipe(architecture: str, epochs: int | None) -> Recipe:
    recipe = ZOO[architecture].recipe
    return recipe if epochs is None else replace(recipe, epochs=epochs)


def _model_key(architecture: str, data: ImageSet, seed: int, epochs: int | None) -> str:
    return digest(
        "overlap-model",
        ZOO[architecture].describe(),
        _recipe(architecture, epochs).describe(),
        seed,
        data.fingerprint,
        timm.__version__,
    )


def _trained(architecture: str, data: ImageSet, seed: int, epochs: int | None, store: CacheStore) -> SimModel:
    entry = ZOO[architecture]
    recipe = _recipe(architecture, epochs)
    classes = data.num_classes
    build = lambda: entry.build(num_classes=classes)  # noqa: E731
    arrays = store.get_or_compute(
        "knowledge",
        _model_key(architecture, data, seed, epochs),
        lambda: state_to_arrays(
            train_classifier(build, entry.preprocess(), data, recipe, seed, f"train {architecture} on {data.name}")[0]
        ),
    )
    net = build()
    net.load_state_dict(arrays_to_state(arrays))
    return SimModel(net, entry.preprocess(), f"{architecture}@{data.name}", f"overlap:{architecture}")


def knowledge_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman (with p-values) of each metric against transfer accuracy.

    Groups: ``all`` sources pooled; ``within architecture`` (metric and accuracy minus
    their architecture's mean, so a source architecture that is both close to the
    target's and a worse feature extractor does not decide the sign); ``between
    architectures`` (the architectures' means, one point each: the paper's architecture
    study, from 3 architectures on); each architecture alone.
    """
    demeaned = table.copy()
    columns = list(METRICS) + ["transfer_accuracy"]
    means = table.groupby("architecture", sort=False)[columns]
    demeaned[columns] = table[columns] - means.transform("mean")
    architectures = table["architecture"].nunique()
    groups = [("all", table)]
    if architectures > 1:
        groups.append(("within architecture", demeaned))
        if architectures > 2:
            groups.append(("between architectures", means.mean()))
        groups += list(table.groupby("architecture", sort=False))
    return pd.DataFrame(
        [
            {
                "group": group,
                "metric": metric,
                "sources": len(part),
                **correlate(part[metric].to_numpy(float), part["transfer_accuracy"].to_numpy(float)),
            }
            for group, part in groups
            for metric in METRICS
        ]
    )


@dataclass
class OverlapStudy:
    """Result of :func:`overlap_experiment`: one row per source, the correlations, and the folder they were written
    to (None if nowhere)."""

    table: pd.DataFrame
    correlations: pd.DataFrame
    out: Path | None = None


def overlap_experiment(
    architectures: tuple[str, ...] = ARCHITECTURES,
    *,
    overlaps: tuple[int, ...] = OVERLAPS,
    eps: float = 0.1,
    steps: int = 50,
    seed: int = 0,
    epochs: int | None = None,
    cache: CacheStore | str | Path | None = None,
    out: str | Path | None = None,
) -> OverlapStudy:
    """The data-overlap experiment (module text); writes ``knowledge_sources.csv``,
    ``knowledge_correlations.csv`` and ``knowledge_transfer.png`` into ``out`` if given.

    ``epochs`` overrides the zoo recipes' (for quick looks); trained models are cached
    (kind ``knowledge``).
    """
    unknown = [a for a in architectures if a not in ZOO]
    if unknown or not architectures:
        raise ArchsimError(
            f"unknown architecture {unknown[0]!r}; choose zoo entries such as {', '.join(ARCHITECTURES)}"
            if unknown
            else "give architectures"
        )
    chosen = [source_classes(o) for o in overlaps]
    if len(overlaps) < 3:
        raise ArchsimError("give at least 3 overlaps for a correlation, e.g. 0,50,100")
    store = check_cache(cache)
    source_half, target_half = _halves(load_data("digits", split="train"), seed)
    task_train = _restrict(target_half, TARGET_CLASSES)
    task_test = _restrict(load_data("digits", split="eval"), TARGET_CLASSES)
    attack = create_attack("pgd", eps=eps, steps=steps)
    sources = [
        (a, o, c, _restrict(source_half, c)) for a in architectures for o, c in zip(overlaps, chosen, strict=True)
    ]
    trainings = [(TARGET_ARCHITECTURE, task_train, TARGET_SEED)] + [(a, data, ZOO[a].seed) for a, _, _, data in sources]
    # All models train first, one per core, longest first; each is then a cache hit below.
    trainings.sort(key=lambda job: -training_cost(ZOO[job[0]], len(job[1])))
    jobs = [
        (_trained, (a, data, seed, epochs))
        for a, data, seed in trainings
        if not store.contains("knowledge", _model_key(a, data, seed, epochs))
    ]
    train_side_by_side(jobs, store, "knowledge transfer: train")
    target = _trained(TARGET_ARCHITECTURE, task_train, TARGET_SEED, epochs, store)
    rows = []
    for architecture, overlap, classes, data in tqdm(
        sources, desc="knowledge transfer: sources", unit="source", disable=None
    ):
        source = _trained(architecture, data, ZOO[architecture].seed, epochs, store)
        key = digest(
            "overlap-row",
            source.fingerprint,
            target.fingerprint,
            task_train.fingerprint,
            task_test.fingerprint,
            attack.config(),
            seed,
        )

        def measure(source: SimModel = source) -> dict:
            row = pair_transferability(source, target, task_test.images, task_test.labels, attack, seed=seed)
            row["transfer_accuracy"] = transfer_accuracy(source, task_train, task_test, seed=seed)
            return {name: np.float64(value) for name, value in row.items()}

        measured = store.get_or_compute("knowledge", key, measure)
        rows.append(
            {
                "architecture": architecture,
                "overlap": overlap,
                "classes": "".join(map(str, classes)),
                **{name: float(value) for name, value in measured.items()},
            }
        )
    table = pd.DataFrame(rows)
    table["test_images"] = table["test_images"].astype(int)
    correlations = knowledge_correlations(table)
    study = OverlapStudy(table, correlations, Path(out) if out is not None else None)
    if out is not None:
        from archsim.report.figures import knowledge_transfer_figure, write_png

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "knowledge_sources.csv", table.to_csv(index=False, float_format="%.6g"))
        atomic_write_text(out / "knowledge_correlations.csv", correlations.to_csv(index=False, float_format="%.6g"))
        write_png(knowledge_transfer_figure(table, correlations), out / "knowledge_transfer.png")
    return study


def overlap_on_run(
    run_dir: str | Path,
    architectures: tuple[str, ...] = ARCHITECTURES,
    *,
    overlaps: tuple[int, ...] = OVERLAPS,
    steps: int = 50,
    epochs: int | None = None,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
) -> OverlapStudy:
    """:func:`overlap_experiment` at a finished digits run's radius and seed, with its cache (unless ``cache`` is
    given), written into ``out`` (default ``RUN/knowledge``), where the run's report finds it."""
    from archsim.runs import RunFolder

    folder = RunFolder(run_dir)
    settings = folder.settings
    if settings.data.split(",")[0] != "digits":
        raise ParameterError(
            "run_dir",
            f"the run {run_dir} is on {settings.data}; the data-overlap experiment is on digits: give {{}} a digits "
            f"run, or none",
        )
    return overlap_experiment(
        architectures,
        overlaps=overlaps,
        eps=settings.eps,
        steps=steps,
        seed=settings.seed,
        epochs=epochs,
        cache=cache or folder.config.get("cache"),
        out=out if out is not None else Path(run_dir) / "knowledge",
    )
