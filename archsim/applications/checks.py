"""The SAT paper's further checks (SPEC §2.10) on a run: checkpoints during training
against the final model, SAT against identical misclassifications under attack, and
where an adversarially trained model sits among the run's models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from archsim.analysis.training import relation_groups, summarise
from archsim.cache import CacheStore, atomic_write_text
from archsim.engines import Engine
from archsim.errors import ArchsimError, ParameterError, parameter_called
from archsim.measures.comparison import correlate
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
        n_boot=settings["n_boot"],
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

    name: str
    table: pd.DataFrame
    """The adversarially trained model (``relation`` itself: its white-box SAT), then one row per other
    model of the run: ``relation`` (same or different architecture), ``regime``, accuracy, white-box
    success, and ``sat`` with the adversarially trained model (95 % interval ``sat_low``, ``sat_high``)."""
    summary: pd.DataFrame
    """Mean SAT of the adversarially trained model with the same and with other architectures, then
    the run's own pairs by relation (seeds, regimes, architectures; SPEC §2.5), ``nearest`` marking the
    run relation whose mean is closest to the same-architecture mean."""


def adversarially_trained(
    run_dir: str | Path,
    model: str,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> AdversarialCheck:
    """Does adversarial training change a model like a change of training regime (the SAT paper's
    finding) or like a change of architecture?

    ``model`` (e.g. ``zoo:resnet-adv``) joins the run as :func:`~archsim.applications.newcomer.add_model`
    does (one attack, the rest from the cache; the run folder is not modified), or is taken from the
    run if it is in it. Its SAT with the run's models of its own architecture is set beside the run's
    mean SAT between seeds, between training regimes and between architectures.
    """
    from archsim.models import create_model

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    store = folder.cache(cache)
    folder.require_cached(store)  # before the model is loaded (a zoo model may train first)
    known = pd.read_csv(run_dir / "models.csv")
    loaded = create_model(model, cache=store, device="cpu")  # for its name, weights and architecture only
    same_weights = known.loc[known["fingerprint"] == loaded.fingerprint, "model"]
    name = same_weights.iloc[0] if len(same_weights) else loaded.name
    if not len(same_weights) and name in set(known["model"]):
        raise ParameterError(
            "model",
            f"the run {run_dir} already has another model named {name!r}; give {{}} another name with ,name=OTHER",
        )
    peers = known.loc[(known["architecture"] == loaded.architecture_id) & (known["model"] != name), "model"]
    del loaded
    if not len(peers):
        raise ParameterError(
            "model",
            f"{model} has the architecture of no other model in {run_dir}; "
            "run it beside the same architecture trained normally (e.g. zoo:resnet-adv with zoo:resnet-s0)",
        )
    run = load_run(
        run_dir, store, device, batch_size, models=[] if len(same_weights) else [model], engine=engine, address=address
    )
    models = run.models
    others = [m for m in run.transfer.names if m != name]
    pairs = run.pairs.set_index(["source", "target"])
    info = models.set_index("model")
    listed = [name, *others]
    table = pd.DataFrame(
        {
            "model": listed,
            "relation": ["itself"]
            + ["same architecture" if m in set(peers) else "different architecture" for m in others],
            "regime": [info.loc[m, "regime"] for m in listed],
            "clean_accuracy": [float(info.loc[m, "clean_accuracy"]) for m in listed],
            "white_box_success": [float(info.loc[m, "white_box_success"]) for m in listed],
            "sat": [float(run.sat.loc[name, m]) for m in listed],
            "sat_low": [float(pairs.loc[(name, m), "sat_low"]) for m in listed],
            "sat_high": [float(pairs.loc[(name, m), "sat_high"]) for m in listed],
        }
    )
    rows = [
        {
            "comparison": f"{name} vs {relation}",
            "pairs": len(part),
            "mean_sat": float(part["sat"].mean()),
            "std_sat": float(part["sat"].std(ddof=0)),
        }
        for relation, part in (
            (r, table[table["relation"] == r]) for r in ("same architecture", "different architecture")
        )
        if len(part)
    ]
    own = summarise(relation_groups(run.sat.loc[others, others], models))
    own["comparison"] = "run: " + own["comparison"]
    summary = pd.concat([pd.DataFrame(rows), own], ignore_index=True)
    gap = (own["mean_sat"] - rows[0]["mean_sat"]).abs()
    summary["nearest"] = summary.index == gap.idxmin() + len(rows) if gap.notna().any() else False
    return AdversarialCheck(name, table, summary)


def misclassification_correlation(table: pd.DataFrame) -> dict[str, float]:
    """Correlation of SAT with the identical-misclassification rate over pairs (paper: positive)."""
    return {"pairs": len(table), **correlate(table["sat"].to_numpy(float), table["identical_rate"].to_numpy(float))}


def checks_on_run(
    run_dir: str | Path,
    checkpoints_of: str | None = None,
    epochs: list[int] | None = None,
    adversarial: str | None = None,
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
    ``adversarial``, a model spec: :func:`adversarially_trained`) and ``checks.png``."""
    from archsim.report.figures import checks_figure, write_png

    if adversarial is not None:
        from archsim.models import check_model_specs

        check_model_specs([adversarial])  # a typo is refused before any work
    run = load_run(run_dir, cache, device, batch_size)
    identical = identical_misclassifications(run.transfer, run.sat)
    summary = pd.DataFrame([{"check": "sat vs identical_rate", **misclassification_correlation(identical)}])
    tables = {"identical_misclassifications.csv": identical}
    checkpoints = None
    if checkpoints_of is not None:
        with parameter_called("model", "checkpoints_of"):
            checkpoints = checkpoint_sat(run_dir, checkpoints_of, epochs, cache, device, batch_size, engine, address)
        tables["checkpoints.csv"] = checkpoints
        trend = correlate(checkpoints["epoch"].to_numpy(float), checkpoints["sat_vs_final"].to_numpy(float))
        summary = pd.concat(
            [summary, pd.DataFrame([{"check": "checkpoint epoch vs sat_vs_final", "pairs": len(checkpoints), **trend}])]
        )
    tables["checks_summary.csv"] = summary
    robust = None
    if adversarial is not None:
        with parameter_called("model", "adversarial"):
            robust = adversarially_trained(run_dir, adversarial, cache, device, batch_size, engine, address)
        tables["adversarial.csv"] = robust.table
        tables["adversarial_summary.csv"] = robust.summary
    out = Path(out) if out is not None else Path(run_dir) / "checks"
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        atomic_write_text(out / name, table.to_csv(index=False, float_format="%.6g"))
    write_png(checks_figure(checkpoints, identical, robust.summary if robust else None), out / "checks.png")
    return tables
