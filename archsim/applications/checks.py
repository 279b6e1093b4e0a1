"""The SAT paper's further checks (docs/method.md#analysis) on a run: checkpoints during training
against the final model, SAT against identical misclassifications under attack, and
where an adversarially trained model sits among the run's models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from archsim.analysis.training import mean_both_ways, relation_groups, summarise
from archsim.cache import CacheStore, atomic_write_text
from archsim.engines import Engine
from archsim.errors import ArchsimError, ParameterError, parameter_called
from archsim.measures.comparison import correlate
from archsim.report.text import table_text
from archsim.runs import RunFolder, load_run, run_like
from archsim.transfer import TransferResult


def identical_misclassifications(transfer: TransferResult, sat: pd.DataFrame) -> pd.DataFrame:
    """Per pair: how often the attacked target makes the very mistake the attacked source makes.

    Over X_AB (both clean-correct) and both directions: target B labels A's adversarial
    image with the same wrong class A gives it (and vice versa). ``identical`` counts
    them, ``identical_rate`` is the percentage of the 2|X_AB| decisions.
    """
    names = transfer.names
    correct, pred, labels = transfer.clean_correct, transfer.adv_pred, transfer.labels
    own = pred[np.arange(len(names)), np.arange(len(names))]  # source s on its own set, [N, M]
    same_mistake = (pred == own[:, None, :]) & (own[:, None, :] != labels[None, None, :])  # [s, t, M]
    rows = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            both = correct[a] & correct[b]
            count = int((same_mistake[a, b] & both).sum() + (same_mistake[b, a] & both).sum())
            rows.append(
                {
                    "a": names[a],
                    "b": names[b],
                    "sat": float(sat.iloc[a, b]),
                    "identical": count,
                    "identical_rate": 100 * count / (2 * both.sum()) if both.any() else np.nan,
                }
            )
    return pd.DataFrame(rows)


def checkpoint_sat(
    run_dir: str | Path,
    model: str,
    *,
    epochs: list[int] | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> pd.DataFrame:
    """SAT of a zoo model's training checkpoints against the final model, on the run's images and attack.

    ``epochs`` default: five epochs spread over training. Each checkpoint is the
    model ``zoo:NAME,epoch=E`` (trained once keeping every epoch, then cached).
    ``engine`` and ``address`` as in :func:`archsim.runs.run_sat`.
    """
    from archsim.models.zoo import ZOO

    folder = RunFolder(run_dir)
    settings = folder.settings
    name = model.split(":", 1)[1].split(",")[0] if model.startswith("zoo:") else None
    if name not in ZOO or "," in model:
        raise ParameterError(
            "model",
            f"{model!r} must be a zoo model such as zoo:resnet-s0 (archsim retrains it keeping every epoch)",
        )
    total = ZOO[name].recipe.epochs
    chosen = sorted(set(epochs)) if epochs else sorted({int(round(e)) for e in np.linspace(1, total - 1, 5)})
    bad = [e for e in chosen if not 1 <= e < total]
    if bad:
        raise ArchsimError(
            f"checkpoint epoch {bad[0]} is outside 1..{total - 1} of zoo:{name} (epoch {total} is the final model)"
        )
    store = folder.cache(cache)
    specs = [f"zoo:{name},epoch={e}" for e in chosen] + [f"zoo:{name}"]
    run = run_like(
        folder,
        specs,
        n_boot=settings.n_boot,
        device=device,
        batch_size=batch_size,
        cache=store,
        engine=engine,
        address=address,
    )
    final = run.transfer.names[-1]
    pairs = run.pairs.set_index(["source", "target"])
    table = pd.DataFrame({"epoch": chosen + [total], "model": run.transfer.names})
    table["clean_accuracy"] = run.models["clean_accuracy"].to_numpy()
    table["sat_vs_final"] = [float(run.sat.loc[m, final]) for m in table["model"]]
    table["sat_low"] = [float(pairs.loc[(m, final), "sat_low"]) for m in table["model"]]
    table["sat_high"] = [float(pairs.loc[(m, final), "sat_high"]) for m in table["model"]]
    return table


@dataclass
class AdversarialCheck:
    """Result of :func:`adversarially_trained`."""

    names: list[str]
    table: pd.DataFrame
    """One row per adversarially trained model (``adversarial``) and model of the run (or other adversarially
    trained one): ``relation`` (itself, adversarially trained, same or different architecture), ``regime``,
    accuracy, white-box success, and their ``sat`` (95 % interval ``sat_low``, ``sat_high``)."""
    summary: pd.DataFrame
    """Mean SAT among the adversarially trained models (the paper's comparison, with two or more), between them and
    the run's models of their architecture and of others, then the run's own pairs by relation (seeds,
    hyper-parameters, regimes, architectures; docs/method.md#analysis); each mean also as the ln of the mean
    percentage (the paper's
    kind), ``mean_sat_low``/``mean_sat_high`` the means of the pairs' 95 % bounds, ``paper_mean_sat`` the paper's
    value where it gives one, ``nearest`` marking the run relation closest to the first row."""


PAPER_ADVERSARIAL = {"adversarially trained among themselves": 3.15, "run: different training regimes": 3.27}
"""The paper's means: five adversarially trained ResNet-18s among themselves, and training regimes."""


def adversarially_trained(
    run_dir: str | Path,
    models: str | list[str],
    *,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> AdversarialCheck:
    """Does adversarial training change a model like a change of training regime (the SAT paper's
    finding) or like a change of architecture?

    ``models`` (e.g. ``zoo:resnet-adv zoo:resnet-adv-s1 zoo:resnet-adv-s2``) join the run as
    :func:`~archsim.applications.newcomer.add_model` does (one attack each, the rest from the cache; the run folder is
    not modified), or are taken from the run where they are in it. As the paper ran it: the mean SAT among several
    adversarially trained models of one architecture (different seeds; the paper's five ResNet-18s: 3.15) against the
    run's mean SAT between training regimes (the paper: 3.27), seeds and architectures; with one model, its SAT with
    the run's models of its own architecture takes that place.
    """
    specs = [models] if isinstance(models, str) else list(models)
    if not specs:
        raise ParameterError("models", "give at least one adversarially trained model")
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    store = folder.cache(cache)
    folder.require_cached(store)  # before the models are loaded (a zoo model may train first)
    names, joining, architectures = placed_models(specs, folder.models, store, run_dir)
    known = folder.models
    adversarial = set(names)
    peers = {
        name: set(known.loc[(known["architecture"] == arch) & ~known["model"].isin(adversarial), "model"])
        for name, arch in architectures.items()
    }
    lonely = [spec for spec, name in zip(specs, names, strict=True) if not peers[name]]
    if lonely:
        raise ParameterError(
            "models",
            f"{lonely[0]} has the architecture of no other model in {run_dir}; "
            "run it beside the same architecture trained normally (e.g. zoo:resnet-adv with zoo:resnet-s0)",
        )
    run = load_run(
        run_dir, cache=store, device=device, batch_size=batch_size, models=joining, engine=engine, address=address
    )
    others = [m for m in run.transfer.names if m not in adversarial]
    pairs = run.pairs.set_index(["source", "target"])
    info = run.models.set_index("model")

    def relation(name: str, other: str) -> str:
        if other == name:
            return "itself"
        if other in adversarial:
            return "adversarially trained"
        return "same architecture" if other in peers[name] else "different architecture"

    table = pd.DataFrame(
        [
            {
                "adversarial": name,
                "model": other,
                "relation": relation(name, other),
                "regime": info.loc[other, "regime"],
                "clean_accuracy": float(info.loc[other, "clean_accuracy"]),
                "white_box_success": float(info.loc[other, "white_box_success"]),
                "sat": float(run.sat.loc[name, other]),
                "sat_low": float(pairs.loc[(name, other), "sat_low"]),
                "sat_high": float(pairs.loc[(name, other), "sat_high"]),
            }
            for name in names
            for other in [name, *[n for n in names if n != name], *others]
        ]
    )
    # Each unordered pair once: SAT is symmetric, and among the adversarially trained both orders are listed.
    among = table[(table["relation"] == "adversarially trained") & (table["adversarial"] < table["model"])]
    groups = [
        ("adversarially trained among themselves", among),
        ("adversarially trained vs same architecture", table[table["relation"] == "same architecture"]),
        ("adversarially trained vs different architecture", table[table["relation"] == "different architecture"]),
    ]
    rows = [summary_row(comparison, part) for comparison, part in groups if len(part)]
    own = summarise(relation_groups(run.sat.loc[others, others], run.models))
    own["comparison"] = "run: " + own["comparison"]
    own = own.drop(columns="paper_mean_sat")
    summary = pd.concat([pd.DataFrame(rows), own], ignore_index=True)
    summary["paper_mean_sat"] = summary["comparison"].map(PAPER_ADVERSARIAL)
    gap = (summary.loc[len(rows) :, "mean_sat"] - rows[0]["mean_sat"]).abs()
    summary["nearest"] = summary.index == gap.idxmin() if gap.notna().any() else False
    return AdversarialCheck(names, table, summary)


def placed_models(
    specs: list[str], known: pd.DataFrame, store: CacheStore, run_dir: Path
) -> tuple[list[str], list[str], dict[str, str]]:
    """Each model's name in the check (the run's name for weights already in it), the specs that join the run, and
    each model's architecture; a name taken by another model of the run, or given twice, is refused."""
    from archsim.models import create_model

    names, joining, architectures = [], [], {}
    for spec in specs:
        loaded = create_model(spec, cache=store, device="cpu")  # for its name, weights and architecture only
        same_weights = known.loc[known["fingerprint"] == loaded.fingerprint, "model"]
        name = same_weights.iloc[0] if len(same_weights) else loaded.name
        if not len(same_weights) and name in set(known["model"]):
            raise ParameterError(
                "models",
                f"the run {run_dir} already has another model named {name!r}; give {{}} another name with ,name=OTHER",
            )
        if name in names:
            raise ParameterError("models", f"{spec} is {name!r} again; give {{}} each model once")
        names.append(name)
        architectures[name] = loaded.architecture_id
        if not len(same_weights):
            joining.append(spec)
        del loaded
    return names, joining, architectures


def summary_row(comparison: str, part: pd.DataFrame) -> dict[str, float | int | str]:
    """Pairs, mean SAT (also as the ln of the mean percentage) and spread of ``part``, with the means of its pairs'
    95 % bounds."""
    mean_sat, ln_mean_percent = mean_both_ways(part["sat"])
    return {
        "comparison": comparison,
        "pairs": len(part),
        "mean_sat": mean_sat,
        "ln_mean_percent": ln_mean_percent,
        "std_sat": float(part["sat"].std(ddof=0)),
        "mean_sat_low": float(part["sat_low"].mean()),
        "mean_sat_high": float(part["sat_high"].mean()),
    }


def misclassification_correlation(table: pd.DataFrame) -> dict[str, float]:
    """Correlation of SAT with the identical-misclassification rate over pairs (paper: positive)."""
    return {"pairs": len(table), **correlate(table["sat"].to_numpy(float), table["identical_rate"].to_numpy(float))}


def checks_on_run(
    run_dir: str | Path,
    *,
    checkpoints_of: str | None = None,
    epochs: list[int] | None = None,
    adversarial: list[str] | None = None,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> dict[str, pd.DataFrame]:
    """``archsim checks``, written into ``out`` (default ``RUN/checks``):
    ``identical_misclassifications.csv``, ``checks_summary.csv``, ``checkpoints.csv``
    (with ``checkpoints_of``), ``adversarial.csv`` and ``adversarial_summary.csv`` (with
    ``adversarial``, model specs: :func:`adversarially_trained`) and ``checks.png``."""
    from archsim.report.figures import checks_figure, write_png

    if adversarial:
        from archsim.models import check_model_specs

        check_model_specs(list(adversarial))  # a typo is refused before any work
    run = load_run(run_dir, cache=cache, device=device, batch_size=batch_size)
    identical = identical_misclassifications(run.transfer, run.sat)
    summary = pd.DataFrame([{"check": "sat vs identical_rate", **misclassification_correlation(identical)}])
    tables = {"identical_misclassifications.csv": identical}
    checkpoints = None
    if checkpoints_of is not None:
        with parameter_called("model", "checkpoints_of"):
            checkpoints = checkpoint_sat(
                run_dir,
                checkpoints_of,
                epochs=epochs,
                cache=cache,
                device=device,
                batch_size=batch_size,
                engine=engine,
                address=address,
            )
        tables["checkpoints.csv"] = checkpoints
        trend = correlate(checkpoints["epoch"].to_numpy(float), checkpoints["sat_vs_final"].to_numpy(float))
        summary = pd.concat(
            [summary, pd.DataFrame([{"check": "checkpoint epoch vs sat_vs_final", "pairs": len(checkpoints), **trend}])]
        )
    tables["checks_summary.csv"] = summary
    robust = None
    if adversarial:
        with parameter_called("models", "adversarial"):
            robust = adversarially_trained(
                run_dir,
                list(adversarial),
                cache=cache,
                device=device,
                batch_size=batch_size,
                engine=engine,
                address=address,
            )
        tables["adversarial.csv"] = robust.table
        tables["adversarial_summary.csv"] = robust.summary
    out = Path(out) if out is not None else Path(run_dir) / "checks"
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        atomic_write_text(out / name, table.to_csv(index=False, float_format="%.6g"))
    write_png(checks_figure(checkpoints, identical, robust.summary if robust else None), out / "checks.png")
    return tables


def checks_summary(tables: dict[str, pd.DataFrame]) -> str:
    """What ``archsim checks`` prints of :func:`checks_on_run`'s tables: the checkpoints and the adversarial check
    where they were asked for (with the run relation nearest the adversarially trained models), then the summary."""
    lines = []
    if "checkpoints.csv" in tables:
        lines.append(table_text(tables["checkpoints.csv"]))
    if "adversarial.csv" in tables:
        summary = tables["adversarial_summary.csv"]
        lines += [table_text(tables["adversarial.csv"]), table_text(summary.drop(columns="nearest"))]
        own, nearest = summary.iloc[0], summary[summary["nearest"]]
        if len(nearest):
            lines.append(
                f"{own['comparison']}: mean SAT {own['mean_sat']:.2f}, nearest {nearest['comparison'].iloc[0]} "
                f"({nearest['mean_sat'].iloc[0]:.2f})"
            )
    return "\n".join([*lines, table_text(tables["checks_summary.csv"])])
