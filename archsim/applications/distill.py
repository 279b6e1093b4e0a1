"""Knowledge distillation against SAT (docs/method.md#decisions): which teacher makes the best student?

One student per teacher, trained from scratch with DeiT-style hard-label
distillation on the run's training data under random affine augmentation (the
teacher labels each augmented image; without augmentation its label would be the
ground truth on every training image); its accuracy is set against the
teacher-student SAT of the run, overall and split by whether teacher and student
share the base architecture, with teacher accuracy as the control.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import timm
from tqdm.auto import tqdm

from archsim.cache import CacheStore, atomic_write_text, digest
from archsim.data import ImageSet, load_data
from archsim.errors import ArchsimError, ParameterError
from archsim.measures.comparison import correlate, partial_correlate
from archsim.models import create_model
from archsim.models.parallel import train_side_by_side
from archsim.models.train import Recipe, train_classifier
from archsim.models.wrapper import SimModel
from archsim.models.zoo import ZOO, ZooEntry
from archsim.params import check
from archsim.report.text import table_text
from archsim.runs import RunFolder

BASE = "Base architecture"
NO_TEACHER = "(no teacher)"


@dataclass
class Distillation:
    """Result of :func:`distill`: ``table`` one row per teacher, ``correlations`` per group."""

    student: str
    table: pd.DataFrame
    correlations: pd.DataFrame
    out: Path

    def summary(self) -> str:
        """What ``archsim distill`` prints: a row per teacher, then the student's accuracy against SAT."""
        return "\n".join([table_text(self.table), "\nstudent accuracy against:", table_text(self.correlations)])


def _run_model(models: pd.DataFrame, given: str, role: str, run_dir: Path) -> pd.Series:
    found = models[(models["model"] == given) | (models["spec"] == given)]
    if found.empty:
        raise ArchsimError(
            f"{role} {given!r} is not a model of the run {run_dir} ({', '.join(models['model'])}); name one of them"
        )
    return found.iloc[0]


def _bases(run_dir: Path, names: list[str]) -> dict[str, str]:
    from archsim.analysis.cards import read_cards

    path = run_dir / "cards.csv"
    cards = read_cards(path) if path.is_file() else None
    return {n: cards.loc[n, BASE] if cards is not None and n in cards.index else "unknown" for n in names}


def _accuracy(model: SimModel, images, labels) -> float:
    from archsim.transfer import predict

    return float((predict(model, images, 256).argmax(-1) == labels).float().mean() * 100)


def distill(
    run_dir: str | Path,
    student: str,
    *,
    teachers: list[str] | None = None,
    epochs: int | None = None,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
) -> Distillation:
    """Train the zoo architecture ``student`` once per teacher and relate its accuracy to SAT.

    Parameters
    ----------
    run_dir : path
        A finished run whose data has a training split (``digits``).
    student : str
        A ``zoo:`` model of the run (spec or name): its architecture, recipe and seed
        are reused; its SAT row gives the teacher-student similarities.
    teachers : list of str, optional
        Models of the run (default: all but the student).
    epochs : int, optional
        Training epochs of each student (default: the student's recipe).
    out : path, optional
        Default ``RUN/distill/<student>``: ``distill.csv``, ``distill_correlations.csv``, ``distill.png``.
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    settings = folder.settings
    models = folder.models
    row = student_row(models, student, run_dir)
    entry_name = str(row["spec"]).split(":", 1)[1].split(",")[0]
    entry = ZOO[entry_name]
    try:
        train = load_data(settings.data, split="train")
    except ArchsimError:
        raise ArchsimError(
            f"distillation trains students on the run's training data, and {settings.data!r} has none; use a digits run"
        ) from None
    evaluation = load_data(settings.data, split="eval")
    chosen = teacher_rows(models, teachers, row, run_dir)
    check("epochs", epochs)
    # Always augmented: on un-augmented digits every teacher's top-1 label is the true label
    # (teachers fit the training set), which would make all students identical.
    recipe = replace(entry.recipe, augment="affine", **({} if epochs is None else {"epochs": epochs}))
    store = folder.cache(cache)
    sat = folder.sat
    bases = _bases(run_dir, list(models["model"]))

    name = str(row["model"])
    # The zoo trainer runs on the CPU; the teacher labels its batches there.
    loaded = [(t, create_model(str(t["spec"]), cache=store, device="cpu")) for t in chosen]
    keys = {t["model"]: _student_key(entry, recipe, teacher, train) for t, teacher in loaded}
    keys[NO_TEACHER] = _student_key(entry, recipe, None, train)
    # The missing students train one per core (each is a cache hit below); a worker loads its teacher by spec.
    specs = {keys[NO_TEACHER]: None} | {keys[t["model"]]: str(t["spec"]) for t, _ in loaded}
    jobs = [
        (_student_accuracy, (entry_name, recipe, train, evaluation, spec, key, name))
        for key, spec in specs.items()
        if not store.contains("distill", key)
    ]
    train_side_by_side(jobs, store, f"distill {name}")
    rows = [
        {
            "teacher": NO_TEACHER,
            "teacher_accuracy": np.nan,
            "teacher_base": "",
            "same_base": False,
            "sat": np.nan,
            "student_accuracy": _student_accuracy(
                entry_name, recipe, train, evaluation, None, keys[NO_TEACHER], name, store
            ),
        }
    ]
    for teacher_row, teacher in tqdm(loaded, desc=f"distill {name}", unit="teacher", disable=None):
        rows.append(
            {
                "teacher": teacher_row["model"],
                "teacher_accuracy": _accuracy(teacher, evaluation.images, evaluation.labels),
                "teacher_base": bases[teacher_row["model"]],
                "same_base": bases[teacher_row["model"]] == bases[name] != "unknown",
                "sat": float(sat.loc[teacher_row["model"], name]),
                "student_accuracy": _student_accuracy(
                    entry_name, recipe, train, evaluation, teacher, keys[teacher_row["model"]], name, store
                ),
            }
        )
    table = pd.DataFrame(rows)
    correlations = distill_correlations(table)
    out_dir = Path(out) if out is not None else run_dir / "distill" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "distill.csv", table.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out_dir / "distill_correlations.csv", correlations.to_csv(index=False, float_format="%.6g"))
    from archsim.report.figures import distill_scatter, write_png

    write_png(distill_scatter(table, name), out_dir / "distill.png")
    return Distillation(name, table, correlations, out_dir)


def student_row(models: pd.DataFrame, student: str, run_dir: Path) -> pd.Series:
    """The run's row of ``student``, which must be a fully trained zoo model (archsim trains it again)."""
    row = _run_model(models, student, "--student", run_dir)
    if not str(row["spec"]).startswith("zoo:"):
        raise ParameterError(
            "student",
            f"{student!r} must be a zoo: model of the run (archsim needs its architecture and recipe to "
            f"train it again)",
        )
    if "epoch=" in str(row["spec"]):
        raise ParameterError(
            "student", f"{student!r} is a training checkpoint; pick a fully trained zoo model of the run"
        )
    return row


def teacher_rows(models: pd.DataFrame, teachers: list[str] | None, student: pd.Series, run_dir: Path) -> list:
    """The run's rows of ``teachers`` (default: every model but the student), the student not among them."""
    chosen = [
        _run_model(models, t, "teacher", run_dir)
        for t in (teachers or [m for m in models["model"] if m != student["model"]])
    ]
    if any(t["model"] == student["model"] for t in chosen):
        raise ParameterError(
            "teachers", f"the student {student['model']!r} cannot be its own teacher; leave it out of {{}}"
        )
    if not chosen:
        raise ParameterError("teachers", "no teachers: the run has only the student; give {}")
    return chosen


def _student_key(entry: ZooEntry, recipe: Recipe, teacher: SimModel | None, train: ImageSet) -> str:
    return digest(
        "distill",
        entry.describe(),
        recipe.describe(),
        teacher.fingerprint if teacher else None,
        train.fingerprint,
        timm.__version__,
    )


def _student_accuracy(
    entry_name: str,
    recipe: Recipe,
    train: ImageSet,
    evaluation: ImageSet,
    teacher: SimModel | str | None,
    key: str,
    student: str,
    store: CacheStore,
) -> float:
    """Accuracy (%) on ``evaluation`` of the zoo architecture trained from scratch with ``teacher``
    (a model, or its spec, loaded here on the CPU), cached under ``key``."""
    entry = ZOO[entry_name]

    def fit() -> dict:
        model = create_model(teacher, cache=store, device="cpu") if isinstance(teacher, str) else teacher
        if _student_key(entry, recipe, model, train) != key:
            raise ArchsimError(
                f"the teacher {teacher} gave other weights than when distill started (a file changed?); run distill "
                f"again"
            )
        state, _ = train_classifier(
            entry.build,
            entry.preprocess(),
            train,
            recipe,
            entry.seed,
            f"distill {student} from {model.name if model else 'labels only'}",
            teacher=model,
        )
        net = entry.build()
        net.load_state_dict(state)
        return {
            "eval_accuracy": _accuracy(
                SimModel(net, entry.preprocess(), student, "distilled"), evaluation.images, evaluation.labels
            )
        }

    return float(store.get_or_compute("distill", key, fit)["eval_accuracy"])


def distill_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Student accuracy against teacher-student SAT (all, same base, different base) and against teacher accuracy;
    then SAT again given the teacher's accuracy (``given``: a partial correlation), so that a SAT effect that is only
    an effect of how accurate the teacher is shows."""
    taught = table[table["teacher"] != NO_TEACHER]
    groups = [
        ("sat", "all teachers", taught),
        ("sat", "same base architecture", taught[taught["same_base"]]),
        ("sat", "different base architecture", taught[~taught["same_base"]]),
        ("teacher_accuracy", "all teachers (control)", taught),
    ]
    rows = [
        {
            "x": x,
            "group": name,
            "given": "",
            "teachers": len(part),
            **correlate(part[x].to_numpy(float), part["student_accuracy"].to_numpy(float)),
        }
        for x, name, part in groups
    ]
    rows += [
        {
            "x": "sat",
            "group": name,
            "given": "teacher_accuracy",
            "teachers": len(part),
            **partial_correlate(
                part["sat"].to_numpy(float),
                part["student_accuracy"].to_numpy(float),
                part["teacher_accuracy"].to_numpy(float),
            ),
        }
        for x, name, part in groups[:3]
    ]
    return pd.DataFrame(rows)


PAPER_RULE = "paper: different base architecture first, least similar first; then same base, most similar first"
MEASURED_RULE = "measured: student accuracy from archsim distill, or predicted by its group's trend in SAT"


def recommend_teachers(run_dir: str | Path, student: str) -> pd.DataFrame:
    """Teachers for ``student`` ranked, with the rule that ranked them in column ``rule``.

    Without measurements, by the SAT paper's practical conclusion (its section 5.2):
    across base architectures a dissimilar teacher helps, within one base a similar
    one does, and the regularisation a different teacher brings wins overall (its best
    student came from a very different teacher). So teachers of another base
    architecture come first, least similar (lowest SAT) first, then those of the
    student's base, most similar first.

    Where ``archsim distill`` has measured this student on the run
    (``RUN/distill/<student>/distill.csv``), teachers are ranked by student accuracy:
    measured where a student was trained with that teacher, else predicted by a line
    fitted to SAT over the measured teachers of the same group (same base or not; all
    measured teachers where the group has fewer than two distinct SATs). Column
    ``student_accuracy`` holds it and ``accuracy_from`` says which.
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)  # a one-line error below unless a finished run
    models = folder.models
    row = _run_model(models, student, "--student", run_dir)
    name = str(row["model"])
    sat = folder.sat
    bases = _bases(run_dir, list(models["model"]))
    table = pd.DataFrame({"teacher": [m for m in models["model"] if m != name]})
    table["sat"] = [float(sat.loc[t, name]) for t in table["teacher"]]
    table["teacher_base"] = [bases[t] for t in table["teacher"]]
    table["same_base"] = [bases[t] == bases[name] != "unknown" for t in table["teacher"]]
    measured = run_dir / "distill" / name / "distill.csv"
    taught = pd.read_csv(measured) if measured.is_file() else pd.DataFrame()
    taught = taught[(taught["teacher"] != NO_TEACHER) & np.isfinite(taught["sat"])] if len(taught) else taught
    if len(taught) >= 2:
        accuracy = taught.set_index("teacher")["student_accuracy"]
        predicted, sources = [], []
        for teacher, value, same in zip(table["teacher"], table["sat"], table["same_base"], strict=True):
            if teacher in accuracy.index:
                predicted.append(float(accuracy[teacher]))
                sources.append("measured")
                continue
            group = taught[taught["same_base"] == same]
            group = group if group["sat"].nunique() >= 2 else taught
            slope, intercept = (
                np.polyfit(group["sat"], group["student_accuracy"], 1)
                if group["sat"].nunique() >= 2
                else (0.0, group["student_accuracy"].mean())
            )
            predicted.append(float(slope * value + intercept))
            sources.append("predicted")
        table["student_accuracy"], table["accuracy_from"] = predicted, sources
        table["rule"] = MEASURED_RULE
        table = table.sort_values(["student_accuracy", "sat"], ascending=[False, True], kind="stable")
    else:
        table["rule"] = PAPER_RULE
        # Different base first (False sorts first), least similar first there; same base, most similar first.
        table["_key"] = np.where(table["same_base"], -table["sat"], table["sat"])
        table = table.sort_values(["same_base", "_key"], ascending=[True, True], kind="stable").drop(columns="_key")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)
