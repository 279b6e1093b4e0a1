"""The SAT paper's further checks (SPEC §2.10) on a run: checkpoints during training
against the final model, and SAT against identical misclassifications under attack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from archsim.api import _attack_spec, _run_settings, run_precision, run_sat
from archsim.engines import Engine
from archsim.cache import CacheStore, atomic_write_text
from archsim.errors import ArchsimError
from archsim.measures.comparison import correlate
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
            rows.append({
                "a": names[a], "b": names[b], "sat": float(sat.iloc[a, b]), "identical": count,
                "identical_rate": 100 * count / (2 * both.sum()) if both.any() else np.nan,
            })
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
    ``engine`` and ``address`` as in :func:`archsim.api.run_sat`.
    """
    from archsim.models.zoo import ZOO

    settings = _run_settings(run_dir)
    name = model.split(":", 1)[1].split(",")[0] if model.startswith("zoo:") else None
    if name not in ZOO or "," in model:
        raise ArchsimError(f"--checkpoints {model!r} must be a zoo model such as zoo:resnet-s0 (archsim retrains it keeping every epoch)")
    total = ZOO[name].recipe.epochs
    chosen = sorted(set(epochs)) if epochs else sorted({int(round(e)) for e in np.linspace(1, total - 1, 5)})
    bad = [e for e in chosen if not 1 <= e < total]
    if bad:
        raise ArchsimError(f"checkpoint epoch {bad[0]} is outside 1..{total - 1} of zoo:{name} (epoch {total} is the final model)")
    store = cache if isinstance(cache, CacheStore) else CacheStore(cache if cache is not None else settings.get("cache"))
    specs = [f"zoo:{name},epoch={e}" for e in chosen] + [f"zoo:{name}"]
    run = run_sat(
        specs, data=settings["data"], n_images=settings["n_images"], attack=_attack_spec(settings["attack"]),
        eps=settings["attack"]["eps"], seed=settings["seed"], eps_s=settings["eps_s"], n_boot=settings["n_boot"],
        device=device, batch_size=batch_size, cache=store, engine=engine, address=address, precision=run_precision(settings),
    )
    final = run.transfer.names[-1]
    pairs = run.pairs.set_index(["source", "target"])
    table = pd.DataFrame({"epoch": chosen + [total], "model": run.transfer.names})
    table["clean_accuracy"] = run.models["clean_accuracy"].to_numpy()
    table["sat_vs_final"] = [float(run.sat.loc[m, final]) for m in table["model"]]
    table["sat_low"] = [float(pairs.loc[(m, final), "sat_low"]) for m in table["model"]]
    table["sat_high"] = [float(pairs.loc[(m, final), "sat_high"]) for m in table["model"]]
    return table


def misclassification_correlation(table: pd.DataFrame) -> dict[str, float]:
    """Correlation of SAT with the identical-misclassification rate over pairs (paper: positive)."""
    return {"pairs": len(table), **correlate(table["sat"].to_numpy(float), table["identical_rate"].to_numpy(float))}


def checks_on_run(
    run_dir: str | Path,
    checkpoints_of: str | None = None,
    epochs: list[int] | None = None,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> dict[str, pd.DataFrame]:
    """``archsim checks``: both checks, written into ``out`` (default ``RUN/checks``):
    ``identical_misclassifications.csv``, ``checks_summary.csv``, ``checkpoints.csv``
    (with ``checkpoints_of``) and ``checks.png``."""
    from archsim.api import load_run
    from archsim.report.figures import checks_figure, write_png

    run = load_run(run_dir, cache, device, batch_size)
    identical = identical_misclassifications(run.transfer, run.sat)
    summary = pd.DataFrame([{"check": "sat vs identical_rate", **misclassification_correlation(identical)}])
    tables = {"identical_misclassifications.csv": identical}
    checkpoints = None
    if checkpoints_of is not None:
        checkpoints = checkpoint_sat(run_dir, checkpoints_of, epochs, cache, device, batch_size, engine, address)
        tables["checkpoints.csv"] = checkpoints
        trend = correlate(checkpoints["epoch"].to_numpy(float), checkpoints["sat_vs_final"].to_numpy(float))
        summary = pd.concat([summary, pd.DataFrame([{"check": "checkpoint epoch vs sat_vs_final", "pairs": len(checkpoints), **trend}])])
    tables["checks_summary.csv"] = summary
    out = Path(out) if out is not None else Path(run_dir) / "checks"
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        atomic_write_text(out / name, table.to_csv(index=False, float_format="%.6g"))
    write_png(checks_figure(checkpoints, identical), out / "checks.png")
    return tables
