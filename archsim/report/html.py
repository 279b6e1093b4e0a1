"""The report page: one HTML file with inline CSS and figures, nothing fetched when opened."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import datetime, timezone
from html import escape

import numpy as np
import pandas as pd

from archsim.analysis.baseline import describe_baseline
from archsim.analysis.training import mean_both_ways
from archsim.measures.comparison import COMPARISON_COLUMNS
from archsim.report import figures, interactive
from archsim.version import __version__

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #23395d; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; opacity: 0.85; font-size: 13px; }
nav { padding: 8px 32px; background: #e8ecf3; font-size: 13px; }
nav a { margin-right: 16px; color: #23395d; }
main { padding: 8px 32px 40px 32px; max-width: 1400px; }
section { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 12px 20px; margin: 18px 0; }
h2 { font-size: 18px; color: #23395d; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
.scroll { overflow-x: auto; max-width: 100%; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.note { color: #8a5a00; background: #fff6e0; border-left: 3px solid #e0a800; padding: 6px 10px; font-size: 13px; }
.muted { color: #666; font-size: 13px; }
pre { background: #f5f5f5; padding: 10px; font-size: 12px; overflow-x: auto; }
th[data-order="asc"]::after { content: " \\25B2"; } th[data-order="desc"]::after { content: " \\25BC"; }
input.table-filter { font-size: 12px; margin: 6px 0 0 0; width: 220px; }
details summary { cursor: pointer; color: #23395d; }
"""


_table_ids = itertools.count()


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    """An HTML table with numbers right-aligned and every string escaped; its columns sort on a click, and a box
    above it filters its rows."""
    table_id = f"table-{next(_table_ids)}"
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, (float, np.floating)):
                # p-values and other tiny numbers keep their magnitude instead of showing 0.000
                text = (
                    "" if np.isnan(value) else f"{value:.2g}" if 0 < abs(value) < 10**-digits else f"{value:.{digits}f}"
                )
                cells.append(f'<td class="num">{text}</td>')
            elif isinstance(value, (int, np.integer)):
                cells.append(f'<td class="num">{value}</td>')
            else:
                cells.append(f"<td>{escape(str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<input class="table-filter" data-table="{table_id}" placeholder="filter rows" aria-label="filter rows">'
        f'<div class="scroll"><table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{escape(alt)}"></figure>'


def _clusters_table(analysis) -> pd.DataFrame:
    clusters = analysis.clusters
    rows = []
    for cluster in sorted(clusters["cluster"].unique()):
        members = clusters[clusters["cluster"] == cluster]
        row = {"cluster": int(cluster), "size": len(members)}
        if "stability" in members:
            row["stability"] = float(members["stability"].mean())
        if analysis.keywords is not None:
            words = analysis.keywords[analysis.keywords["cluster"] == cluster].sort_values("rank")["word"]
            row["keywords (TF-IDF top 5)"] = "; ".join(words)
        row["models"] = ", ".join(members["model"])
        rows.append(row)
    return pd.DataFrame(rows)


# Report sections of the decision commands (docs/method.md#decisions and #analysis), by the run sub-folder they write.
_APPLICATIONS = {
    "ensembles": (
        "Ensembles",
        "Logit-averaging ensembles of the run's models on its images (archsim ensemble, docs/method.md#decisions): "
        "correlation of SAT with the error reduction rate of every 2-ensemble (also given the members' error) and of "
        "k-set diversity with errors; mean scores of K models drawn from L spectral clusters beside random K-sets; the "
        "recommended k-set (error first, SAT among comparable sets), the lowest- and highest-mean-SAT k-sets, one "
        "model from each of k clusters, and random k-sets (random_sets_not_better: share of random sets with at least "
        "that error).",
    ),
    "selection": (
        "Diverse selection",
        "Sets of k models drawn by each sampler (archsim select, docs/method.md#decisions): inverse-similarity "
        "(k-means++ style), "
        "similarity-proportional and uniform; mean SAT among the drawn models and their ensembles' scores.",
    ),
    "distill": (
        "Distillation: student {name}",
        "One student per teacher, hard-label distillation on the training data (archsim distill, "
        "docs/method.md#decisions); "
        "student accuracy against teacher-student SAT, overall and by shared base architecture, teacher accuracy as "
        "control.",
    ),
    "added": (
        "Newcomer: {name}",
        "A model added to this run (archsim add, docs/method.md#decisions): its symmetric and one-sided SAT with each "
        "model, and "
        "its mean SAT with each cluster's members; it joins the highest.",
    ),
    "checks": (
        "Further checks",
        "The paper's further checks (archsim checks, docs/method.md#analysis): SAT against the share of attacked "
        "decisions where the target repeats the "
        "source's "
        "own mistake; SAT of training checkpoints with the final model; an adversarially trained model's mean SAT with "
        "its own architecture and with the others, beside the run's mean SAT between seeds, training regimes and "
        "architectures (nearest: the run relation closest to its same-architecture mean).",
    ),
    "knowledge": (
        "Adversarial vs knowledge transferability",
        "Liang et al.'s data-overlap experiment on digits (archsim knowledge-transfer, docs/method.md#knowledge): "
        "sources trained on 4 "
        "classes "
        "sharing 0-100 % of the target task's (digits 0-3) against a reference target model; per source alpha_1, "
        "alpha_2 "
        "(unsquared), the combined score and the product (S->T), SAT and the target's adversarial loss, set against "
        "the "
        "accuracy of the source with only its last layer retrained on the target task. Correlations pooled, within "
        "architecture (architecture means removed), between architectures (their means, from 3 architectures on) and "
        "per architecture.",
    ),
}


Section = tuple[str, str, str]  # anchor, title, HTML


def _summary_section(analysis) -> Section:
    sat, spectral = analysis.sat, analysis.spectral
    n = len(sat)
    off = sat.to_numpy()[~np.eye(n, dtype=bool)]
    mean_sat, ln_mean_percent = mean_both_ways(off)
    summary = (
        f"<p>{n} models in {spectral.k} spectral clusters. "
        f"Off-diagonal SAT: mean {mean_sat:.3f} (ln of the mean percentage: {ln_mean_percent:.3f}, the paper's kind of "
        f"mean), range {np.nanmin(off):.2f} to {np.nanmax(off):.2f} "
        f"(ln of the % of images fooled; ln 100 = 4.61 means a fully transferable attack).</p>"
    )
    if analysis.stability is not None:
        ari = analysis.stability["ari"]
        summary += (
            f"<p>Cluster stability: adjusted Rand index {ari.mean():.2f} ± {ari.std():.2f} over {len(ari)} "
            f"reclusterings "
            f"of {int(analysis.stability['models'].iloc[0])} randomly kept models (1 = identical clusters).</p>"
        )
    summary += f"<p>{escape(spectral.search.describe())}.</p>"
    if analysis.component_baseline is not None:
        summary += f"<p>{escape(describe_baseline(analysis.component_baseline))}</p>"
    if analysis.importance is not None:
        top = analysis.importance.head(3)
        summary += (
            "<p>Components that best explain SAT: "
            + ", ".join(
                f"<b>{escape(c)}</b> ({v:.3f})" for c, v in zip(top["component"], top["importance_mean"], strict=True)
            )
            + ".</p>"
        )
    summary += "".join(f'<p class="note">{escape(note)}</p>' for note in analysis.notes)
    return "summary", "Summary", summary


def _matrix_section(analysis) -> Section:
    sat, spectral = analysis.sat, analysis.spectral
    explorable = (
        interactive.FINDER_HTML.format(
            options="".join(f'<option value="{escape(m)}">{escape(m)}</option>' for m in sat.index)
        )
        + '<div class="figures">'
        + interactive.matrix_heatmap(sat, spectral.labels, "sat-heatmap", "SAT", "Viridis", analysis.pairs)
        + interactive.matrix_heatmap(
            spectral.ordered_distances(), spectral.labels, "spectral-heatmap", "spectral distance", "Magma_r"
        )
        + "</div>"
        + '<p class="muted">Hover a cell for the pair; drag to zoom, double-click to zoom out; white lines bound '
        "the clusters. The camera icon saves a PNG.</p>"
    )
    heatmaps = _figure(
        figures.ordered_heatmap(sat, spectral.labels, "SAT, models ordered by cluster", "SAT (ln % fooled)", "viridis"),
        "SAT heatmap ordered by cluster",
    ) + _figure(
        figures.ordered_heatmap(
            spectral.ordered_distances(),
            spectral.labels,
            "Distances of spectral features (block-diagonal)",
            "Euclidean distance",
            "magma_r",
        ),
        "spectral distance matrix ordered by cluster",
    )
    static = (
        "<details><summary>Static figures (PNG, for papers and slides)</summary>"
        f'<div class="figures">{heatmaps}</div></details>'
    )
    return "matrix", "SAT matrix and clusters", explorable + static


def _clusters_section(analysis) -> Section:
    spectral = analysis.spectral
    cluster_html = _table(_clusters_table(analysis), digits=2) + _figure(
        figures.eigenvalue_plot(spectral.eigenvalues, spectral.k), "eigenvalues"
    )
    cluster_html += (
        '<p class="muted">Stability: mean Jaccard overlap of a model\'s cluster-mates between the full clustering '
        "and clusterings of random 80 % subsets of the models.</p>"
    )
    return "clusters", "Clusters and keywords", cluster_html


def _importance_section(analysis) -> Section | None:
    if analysis.importance is None:
        return None
    return (
        "importance",
        "Component importance",
        '<div class="figures">'
        + _figure(figures.importance_bars(analysis.importance), "component importance")
        + _table(analysis.importance)
        + "</div>"
        + '<p class="muted">Gradient boosting (500 stages, depth 12, min. samples 4, learning rate 0.02) '
        "predicts each "
        "pair's SAT from which of the 13 components differ; permutation importance with 10 repeats "
        "(docs/method.md#analysis).</p>",
    )


def _training_section(analysis) -> Section | None:
    if analysis.training is None:
        return None
    return (
        "training",
        "Training strategy vs architecture",
        '<div class="figures">'
        + _figure(figures.training_bars(analysis.training), "training vs architecture")
        + _table(analysis.training, digits=2)
        + "</div>",
    )


def _models_section(analysis) -> Section | None:
    if analysis.models is None:
        return None
    columns = [
        c
        for c in ("model", "clean_accuracy", "white_box_success", "family", "regime", "seed", "spec")
        if c in analysis.models
    ]
    return (
        "models",
        "Models and accuracy",
        _table(analysis.models[columns], digits=1)
        + '<p class="muted">clean_accuracy: % of evaluation images classified correctly; '
        "white_box_success: % of those the model's own attack fools.</p>",
    )


def _attacks_section(analysis) -> Section | None:
    attacks = analysis.extras.get("attacks")
    if attacks is None:
        return None
    correlations, white_box = attacks["tables"]
    return (
        "attacks",
        "Attacks compared",
        "<p>SAT of the same models and images under each attack (archsim compare-attacks); "
        "correlation of the off-diagonal entries, every pair of attacks.</p>"
        + _table(correlations[["a", "b", "pairs", "pearson", "spearman", "spearman_p"]])
        + _figure(_png_uri(attacks["figure"]), "SAT under each attack against the reference")
        + "<p>White-box success (%) of each attack on each model:</p>"
        + _table(white_box.reset_index(), digits=1),
    )


def _calibration_section(analysis) -> Section | None:
    calibration = analysis.extras.get("calibration")
    if calibration is None:
        return None
    (table,) = calibration["tables"]
    best = table.loc[table["best"].astype(bool)].iloc[0]
    return (
        "calibration",
        "Radius calibrated against a published matrix",
        f"<p>The run at each radius against the published matrix (archsim calibrate), on the {int(best.pairs)} "
        f"pairs of models both name: the best radius is <b>{int(best.levels)}/255</b> (mean absolute SAT "
        f"difference {best.mean_abs_diff:.3f}, Spearman {best.spearman:.2f}).</p>"
        + _table(table)
        + _figure(_png_uri(calibration["figure"]), "agreement with the published matrix per radius"),
    )


_MEASURE_COLUMNS = (COMPARISON_COLUMNS[0], "pair", *COMPARISON_COLUMNS[1:])


def _measures_section(analysis) -> Section | None:
    measures = analysis.extras.get("measures")
    if measures is None:
        return None
    comparison, _ = measures["tables"]
    columns = [c for c in _MEASURE_COLUMNS if c in comparison]
    return (
        "measures",
        "Other similarity measures",
        "<p>Each measure at the compute SAT spends on the run's images (archsim measures, "
        "docs/guide/measures.md): passes "
        "per item, "
        "spread over resamples relative to the spread across pairs, rank correlation with SAT, correlation "
        "with the "
        "error reduction of logit-averaged 2-ensembles.</p>"
        + _table(comparison[columns])
        + _figure(_png_uri(measures["figure"]), "each measure against SAT"),
    )


def _application_sections(analysis) -> list[Section]:
    sections = []
    for folder, found in analysis.extras.items():
        kind, _, name = folder.partition("/")
        if kind in _APPLICATIONS:
            title, text = _APPLICATIONS[kind]
            html = f"<p>{text}</p>" + "".join(_table(t) for t in found["tables"] if t is not None)
            if found["figure"] is not None:
                html += _figure(_png_uri(found["figure"]), title)
            sections.append((folder.replace("/", "-"), title.format(name=name), html))
    return sections


def _cards_section(analysis) -> Section | None:
    if analysis.cards is None:
        return None
    return "cards", "Model cards", _table(analysis.cards.reset_index())


def _settings_section(analysis) -> Section:
    settings = analysis.config if analysis.config is not None else {"matrix": analysis.source}
    return "settings", "Settings", f"<pre>{escape(json.dumps(settings, indent=2, sort_keys=True, default=str))}</pre>"


def render_report(analysis) -> str:
    """The whole page for an :class:`~archsim.analysis.run.Analysis`."""
    sections = [
        _summary_section(analysis),
        _matrix_section(analysis),
        _clusters_section(analysis),
        _importance_section(analysis),
        _training_section(analysis),
        _models_section(analysis),
        _attacks_section(analysis),
        _calibration_section(analysis),
        _measures_section(analysis),
        *_application_sections(analysis),
        _cards_section(analysis),
        _settings_section(analysis),
    ]
    sections = [section for section in sections if section is not None]
    nav = "".join(f'<a href="#{anchor}">{escape(title)}</a>' for anchor, title, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{escape(title)}</h2>{content}</section>' for anchor, title, content in sections
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sat, spectral = analysis.sat, analysis.spectral
    finder = interactive.finder_data(sat, spectral.labels, analysis.pairs, analysis.cards)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>archsim report: {escape(analysis.source)}</title><style>{_STYLE}</style>"
        f"{interactive.plotly_script()}</head><body>"
        f"<header><h1>archsim report</h1><p>{escape(analysis.source)} · archsim {escape(__version__)} · "
        f"{stamp}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        f'<script type="application/json" id="archsim-data">{finder}</script>'
        f"<script>{interactive.SCRIPT}</script></body></html>\n"
    )
