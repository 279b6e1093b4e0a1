"""``archsim analyze`` and ``report``: an analysis of a matrix or a run folder, written as CSVs beside
``report.html``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from archsim.analysis.agreement import compare_matrices
from archsim.analysis.cards import read_cards
from archsim.analysis.matrix import read_matrix
from archsim.analysis.run import Analysis, analyze_matrix
from archsim.cache import atomic_write_text
from archsim.errors import ArchsimError, ParameterError
from archsim.report.figures import matrix_scatter, write_png
from archsim.report.html import render_report
from archsim.specs import check_out_folder


def write_analysis(analysis: Analysis, out: str | Path, report: bool = True) -> list[str]:
    """Write every table (and ``report.html``) into ``out``; returns the file names written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{out} is a file; choose a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in analysis.tables().items():
        atomic_write_text(out / name, table.to_csv(index=name == "spectral_distances.csv", float_format="%.6f"))
        written.append(name)
    if report:
        atomic_write_text(out / "report.html", render_report(analysis))
        written.append("report.html")
    return written


def analyze(
    matrix: str | Path,
    cards: str | Path | None,
    out: str | Path,
    k: int | None = None,
    seed: int = 0,
    report: bool = True,
) -> Analysis:
    """``archsim analyze --matrix``: a SAT matrix file with a cards file, written into ``out``."""
    sat = read_matrix(matrix)
    analysis = analyze_matrix(sat, read_cards(cards) if cards is not None else None, k=k, seed=seed)
    analysis.source = str(matrix)
    write_analysis(analysis, out, report=report)
    return analysis


def analyze_run(
    run_dir: str | Path,
    *,
    cards: str | Path | None = None,
    out: str | Path | None = None,
    k: int | None = None,
    seed: int = 0,
) -> Analysis:
    """``archsim analyze/report --run``: a finished run folder, its own cards unless ``cards`` is given."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ParameterError(
            "run_dir",
            f"{{}} {run_dir} is not a finished run folder (no config.json); give the folder an archsim run wrote",
        )
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
    if (run_dir / "pairs.csv").is_file():
        analysis.pairs = pd.read_csv(run_dir / "pairs.csv")
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
    "checks": (
        "checks_summary.csv",
        "checkpoints.csv?",
        "adversarial_summary.csv?",
        "adversarial.csv?",
        "identical_misclassifications.csv",
        "checks.png",
    ),
    "knowledge": ("knowledge_correlations.csv", "knowledge_sources.csv", "knowledge_transfer.png"),
    "calibration": ("calibration.csv", "calibration.png"),
}


def _extras(run_dir: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for pattern, files in EXTRA_FILES.items():
        for folder in sorted(p for p in run_dir.glob(pattern) if p.is_dir()):
            paths = [folder / name.rstrip("?") for name in files]
            if any(not p.is_file() for p, name in zip(paths, files, strict=True) if not name.endswith("?")):
                continue
            tables = [
                pd.read_csv(p, index_col=0 if p.name == "attack_white_box.csv" else None) if p.is_file() else None
                for p in paths
                if p.suffix == ".csv"
            ]
            figures = [p.read_bytes() for p in paths if p.suffix == ".png"]
            found[folder.relative_to(run_dir).as_posix()] = {
                "tables": tables,
                "figure": figures[0] if figures else None,
            }
    return found


def compare_matrix_files(
    paths: list[str | Path], out: str | Path | None = None
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, list[str]]]:
    """``archsim compare-matrices``: how far SAT matrices agree, on the models all of them name.

    ``paths``: CSVs in the sat.csv layout or run folders (their sat.csv), labelled by file stem or folder name.
    Returns :func:`archsim.analysis.compare_matrices`' table, the aligned matrices and the models left out of each;
    with ``out``, writes ``matrix_correlations.csv`` and ``matrix_comparison.png`` there.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ParameterError("matrices", "needs at least two matrices; give CSV files or run folders")
    if out is not None:
        check_out_folder(Path(out))
    read = {}
    for path in paths:
        if path.is_dir() and not (path / "sat.csv").is_file():
            raise ArchsimError(f"{path} is a folder without sat.csv; give a run folder or a CSV in the sat.csv layout")
        if not path.exists():
            raise ArchsimError(f"matrix {path} does not exist; give a CSV in the sat.csv layout or a run folder")
        label = path.resolve().name if path.is_dir() else path.stem
        label = label if label not in read else f"{label}-{len(read) + 1}"
        read[label] = read_matrix(path / "sat.csv" if path.is_dir() else path, allow_nan=True)
    table, aligned, left_out = compare_matrices(read)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "matrix_correlations.csv", table.to_csv(index=False, float_format="%.6g"))
        write_png(matrix_scatter(aligned, table, axis_label="SAT in {}"), out / "matrix_comparison.png")
    return table, aligned, left_out
