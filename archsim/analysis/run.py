"""One analysis of one SAT matrix (SPEC §2.1-2.5): clusters and their stability, component
importance, keywords, training vs architecture; written as CSVs beside a report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from archsim.analysis.cards import cards_for, read_cards
from archsim.analysis.clustering import SpectralResult, spectral_clusters
from archsim.analysis.importance import component_importance
from archsim.analysis.keywords import cluster_keywords
from archsim.analysis.matrix import read_matrix
from archsim.analysis.stability import cluster_stability
from archsim.analysis.training import training_vs_architecture
from archsim.cache import atomic_write_text
from archsim.errors import ArchsimError
from archsim.specs import check_seed

# Fewer models than this leave too few pairs for boosting or resampling to mean anything.
MIN_MODELS_IMPORTANCE = 4
MIN_MODELS_STABILITY = 5


@dataclass
class Analysis:
    """Everything ``analyze`` found; ``None`` parts were not computable (``notes`` says why)."""

    sat: pd.DataFrame
    spectral: SpectralResult
    clusters: pd.DataFrame
    stability: pd.DataFrame | None = None
    cards: pd.DataFrame | None = None
    importance: pd.DataFrame | None = None
    keywords: pd.DataFrame | None = None
    training: pd.DataFrame | None = None
    models: pd.DataFrame | None = None
    config: dict[str, Any] | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Results of ``compare-attacks`` and ``measures`` found in the run folder, shown in the report."""

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"clusters.csv": self.clusters, "spectral_distances.csv": self.spectral.ordered_distances()}
        for name, table in (
            ("importance.csv", self.importance), ("keywords.csv", self.keywords),
            ("stability.csv", self.stability), ("training_vs_architecture.csv", self.training),
        ):
            if table is not None:
                tables[name] = table
        return tables


def analyze_matrix(
    sat: pd.DataFrame,
    cards: pd.DataFrame | None = None,
    models: pd.DataFrame | None = None,
    k: int | None = None,
    seed: int = 0,
    n_resamples: int = 30,
) -> Analysis:
    """Analyse a validated SAT matrix; ``cards`` enable importance and keywords, ``models`` §2.5."""
    if k is not None and k > len(sat):
        raise ArchsimError(f"--clusters {k} is more than the {len(sat)} models; choose at most {len(sat)}")
    spectral = spectral_clusters(sat, k=k, seed=check_seed(seed))
    analysis = Analysis(sat, spectral, spectral.labels.rename_axis("model").reset_index(), models=models)
    if len(sat) >= MIN_MODELS_STABILITY and spectral.k < len(sat) - 1:
        analysis.stability, per_model = cluster_stability(sat, spectral.labels, spectral.k, n_resamples=n_resamples, seed=seed)
        analysis.clusters["stability"] = per_model.to_numpy()
    else:
        analysis.notes.append(f"cluster stability needs at least {MIN_MODELS_STABILITY} models and k below N-1")
    if cards is not None:
        analysis.cards = cards_for(cards, list(sat.index))
        analysis.keywords = cluster_keywords(analysis.cards, spectral.labels)
        if len(sat) >= MIN_MODELS_IMPORTANCE:
            analysis.importance = component_importance(sat, analysis.cards, seed=seed)
        else:
            analysis.notes.append(f"component importance needs at least {MIN_MODELS_IMPORTANCE} models")
    else:
        analysis.notes.append("no model cards: component importance and keywords skipped")
    if models is not None and {"architecture", "regime", "seed"} <= set(models.columns):
        analysis.training = training_vs_architecture(sat, models)
    return analysis


def write_analysis(analysis: Analysis, out: str | Path, report: bool = True) -> list[str]:
    """Write every table (and ``report.html``) into ``out``; returns the file names written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArchsimError(f"--out {out} is a file; choose a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in analysis.tables().items():
        atomic_write_text(out / name, table.to_csv(index=name == "spectral_distances.csv", float_format="%.6f"))
        written.append(name)
    if report:
        from archsim.report import render_report

        atomic_write_text(out / "report.html", render_report(analysis))
        written.append("report.html")
    return written


def analyze(
    matrix: str | Path, cards: str | Path | None, out: str | Path, k: int | None = None, seed: int = 0, report: bool = True
) -> Analysis:
    """``archsim analyze --matrix``: a SAT matrix file with a cards file, written into ``out``."""
    sat = read_matrix(matrix)
    analysis = analyze_matrix(sat, read_cards(cards) if cards is not None else None, k=k, seed=seed)
    analysis.source = str(matrix)
    write_analysis(analysis, out, report=report)
    return analysis


def analyze_run(
    run_dir: str | Path, cards: str | Path | None = None, out: str | Path | None = None, k: int | None = None, seed: int = 0
) -> Analysis:
    """``archsim analyze/report --run``: a finished run folder, its own cards unless ``cards`` is given."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ArchsimError(f"{run_dir} is not a finished run folder (no config.json); pass the --out of an archsim run")
    sat = read_matrix(run_dir / "sat.csv")
    card_file = Path(cards) if cards is not None else run_dir / "cards.csv"
    model_cards = read_cards(card_file) if card_file.is_file() else None
    if model_cards is not None and cards is None:
        # A run's own cards may lack models whose forward pass could not be read.
        missing = [n for n in sat.index if n not in model_cards.index]
        if missing:
            model_cards = None
    analysis = analyze_matrix(sat, model_cards, models=pd.read_csv(run_dir / "models.csv"), k=k, seed=seed)
    if model_cards is None and cards is None:
        analysis.notes.append(f"{run_dir}/cards.csv lacks some models; pass --cards to analyse components")
    analysis.config = json.loads((run_dir / "config.json").read_text())
    analysis.source = str(run_dir)
    analysis.extras = _extras(run_dir)
    write_analysis(analysis, out if out is not None else run_dir)
    return analysis


# Tables and figures of the follow-up commands, by the sub-folder (a glob) they write into;
# a "?" marks a file that may be absent. The report shows a folder once its first file exists.
EXTRA_FILES = {
    "attacks": ("attack_correlations.csv", "attack_white_box.csv", "attack_comparison.png"),
    "measures": ("measure_comparison.csv", "measure_correlations.csv", "measure_comparison.png"),
    "ensembles": ("ensemble_correlations.csv", "ensemble_k.csv", "ensemble_selection.csv", "ensembles.png"),
    "selection": ("selection.csv",),
    "distill/*": ("distill.csv", "distill_correlations.csv", "distill.png"),
    "added/*": ("newcomer.csv", "newcomer_clusters.csv"),
    "checks": ("checks_summary.csv", "checkpoints.csv?", "adversarial_summary.csv?", "adversarial.csv?", "identical_misclassifications.csv", "checks.png"),
    "knowledge": ("knowledge_correlations.csv", "knowledge_sources.csv", "knowledge_transfer.png"),
}


def _extras(run_dir: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for pattern, files in EXTRA_FILES.items():
        for folder in sorted(p for p in run_dir.glob(pattern) if p.is_dir()):
            paths = [folder / name.rstrip("?") for name in files]
            if any(not p.is_file() for p, name in zip(paths, files) if not name.endswith("?")):
                continue
            tables = [
                pd.read_csv(p, index_col=0 if p.name == "attack_white_box.csv" else None) if p.is_file() else None
                for p in paths if p.suffix == ".csv"
            ]
            figures = [p.read_bytes() for p in paths if p.suffix == ".png"]
            found[folder.relative_to(run_dir).as_posix()] = {"tables": tables, "figure": figures[0] if figures else None}
    return found
