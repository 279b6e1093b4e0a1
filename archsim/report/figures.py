"""The report's figures, drawn with matplotlib and embedded as PNG data URIs."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: the report is built on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_png(uri: str, path) -> None:
    """Save a figure's data URI as a PNG file (atomically)."""
    from archsim.cache import atomic_write_bytes

    atomic_write_bytes(path, base64.b64decode(uri.split(",", 1)[1]))


def _side(n: int) -> float:
    return float(min(max(4.5, 0.17 * n + 2.5), 15.0))


def ordered_heatmap(matrix: pd.DataFrame, labels: pd.Series, title: str, colorbar: str, cmap: str) -> str:
    """A square matrix with rows and columns ordered by cluster, cluster blocks outlined."""
    order = np.argsort(labels.loc[matrix.index].to_numpy(), kind="stable")
    values = matrix.to_numpy(dtype=float)[np.ix_(order, order)]
    names = matrix.index[order]
    sorted_labels = labels.loc[names].to_numpy()
    n = len(names)
    fig, ax = plt.subplots(figsize=(_side(n) + 1.2, _side(n)))
    image = ax.imshow(values, cmap=cmap, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=colorbar)
    fontsize = 8 if n <= 30 else 6 if n <= 60 else 5
    ax.set_xticks(range(n), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    start = 0
    for end in [*np.flatnonzero(np.diff(sorted_labels)) + 1, n]:
        ax.add_patch(
            plt.Rectangle(
                (start - 0.5, start - 0.5), end - start, end - start, fill=False, edgecolor="black", linewidth=1.4
            )
        )
        start = end
    ax.set_title(title)
    return to_data_uri(fig)


def importance_bars(importance: pd.DataFrame) -> str:
    """Permutation importance per component, largest on top, with one standard deviation."""
    table = importance.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.38 * len(table) + 1.2))
    ax.barh(
        table["component"],
        table["importance_mean"],
        xerr=table["importance_std"],
        color="#4C72B0",
        ecolor="#555",
        capsize=3,
    )
    ax.set_xlabel("permutation importance (drop in R² of the boosted SAT model)")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_title("Which components make models differ")
    return to_data_uri(fig)


def eigenvalue_plot(eigenvalues: np.ndarray, k: int) -> str:
    """Leading eigenvalues of the normalised affinity, the chosen k marked."""
    shown = eigenvalues[: min(len(eigenvalues), max(2 * k, 12))]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(shown) + 1), shown, "o-", color="#4C72B0")
    ax.axvline(k + 0.5, color="#C44E52", linestyle="--", label=f"k = {k}")
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue")
    ax.legend()
    ax.set_title("Spectrum of D^-1/2 W D^-1/2")
    return to_data_uri(fig)


def training_bars(training: pd.DataFrame) -> str:
    """Mean SAT per relation, with the paper's ImageNet means as markers."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(training))
    ax.bar(
        x, training["mean_sat"], yerr=training["std_sat"], color="#55A868", capsize=4, label="this matrix (mean ± sd)"
    )
    paper = training["paper_mean_sat"].to_numpy(dtype=float)
    ax.scatter(
        x[np.isfinite(paper)],
        paper[np.isfinite(paper)],
        color="black",
        marker="_",
        s=600,
        linewidths=2,
        label="SAT paper (ImageNet)",
        zorder=3,
    )
    ax.set_xticks(
        x, [f"{c}\n({p} pairs)" for c, p in zip(training["comparison"], training["pairs"], strict=True)], fontsize=8
    )
    ax.set_ylabel("SAT (ln % fooled)")
    ax.set_ylim(0, 4.8)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Training strategy vs architecture")
    return to_data_uri(fig)


def matrix_scatter(
    matrices: dict[str, pd.DataFrame],
    correlations: pd.DataFrame,
    same_scale: bool = True,
    axis_label: str = "SAT under {}",
) -> str:
    """Off-diagonal entries of every matrix against the first one's, Spearman rho in each title;
    ``same_scale`` draws the identity line (matrices of one measure, e.g. SAT under two attacks)."""
    from archsim.analysis.agreement import off_diagonal

    names = list(matrices)
    reference = off_diagonal(matrices[names[0]])
    others = names[1:]
    columns = min(3, len(others))
    rows = int(np.ceil(len(others) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.8 * rows), squeeze=False)
    lookup = {(r.a, r.b): r for r in correlations.itertuples()}
    for ax, name in zip(axes.flat, others, strict=False):
        values = off_diagonal(matrices[name])
        ax.scatter(reference, values, s=14, alpha=0.7, color="#4C72B0")
        if same_scale:
            low, high = np.nanmin([reference, values]), np.nanmax([reference, values])
            ax.plot([low, high], [low, high], color="#999", linewidth=0.8, linestyle="--")
        r = lookup[(names[0], name)]
        ax.set_title(f"{name}: Spearman {r.spearman:.2f}, Pearson {r.pearson:.2f}", fontsize=9)
        ax.set_xlabel(axis_label.format(names[0]), fontsize=8)
        ax.set_ylabel(axis_label.format(name), fontsize=8)
    for ax in list(axes.flat)[len(others) :]:
        ax.axis("off")
    fig.tight_layout()
    return to_data_uri(fig)


def ensemble_figure(pairs: pd.DataFrame, k_table: pd.DataFrame) -> str:
    """SAT against the error reduction of every 2-ensemble, and mean error reduction of K from L clusters."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.scatter(pairs["sat"], pairs["err_reduction"], s=16, alpha=0.75, color="#4C72B0")
    left.set_xlabel("SAT of the pair (ln % fooled)")
    left.set_ylabel("error reduction rate of the 2-ensemble")
    left.set_title("More similar pairs gain less from ensembling?", fontsize=9)
    for k, part in k_table.groupby("k"):
        right.plot(part["l"], part["mean_err_reduction"], marker="o", label=f"K = {k}")
    right.set_xlabel("L, clusters the K members come from")
    right.set_ylabel("mean error reduction rate")
    right.set_title("K models from L spectral clusters", fontsize=9)
    right.legend(fontsize=8)
    fig.tight_layout()
    return to_data_uri(fig)


def distill_scatter(table: pd.DataFrame, student: str) -> str:
    """Student accuracy against teacher-student SAT, same-base and different-base teachers apart."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    taught = table[table["teacher"] != "(no teacher)"]
    for same, color, label in (
        (True, "#C44E52", "same base architecture"),
        (False, "#4C72B0", "different base architecture"),
    ):
        part = taught[taught["same_base"] == same]
        ax.scatter(part["sat"], part["student_accuracy"], color=color, s=22, label=label)
        for row in part.itertuples():
            ax.annotate(
                row.teacher, (row.sat, row.student_accuracy), fontsize=6, xytext=(3, 2), textcoords="offset points"
            )
    alone = table.loc[table["teacher"] == "(no teacher)", "student_accuracy"]
    if len(alone):
        ax.axhline(alone.iloc[0], color="#999", linestyle="--", linewidth=0.8, label="trained on labels only")
    ax.set_xlabel(f"SAT of teacher and {student}")
    ax.set_ylabel(f"accuracy of the distilled {student} (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return to_data_uri(fig)


def checks_figure(
    checkpoints: pd.DataFrame | None, identical: pd.DataFrame, adversarial: pd.DataFrame | None = None
) -> str:
    """SAT against identical misclassifications; SAT of checkpoints against the final model; the
    adversarially trained model's mean SAT beside the run's relations (``adversarial_summary.csv``)."""
    panels = 1 + (checkpoints is not None) + (adversarial is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(identical["identical_rate"], identical["sat"], s=16, alpha=0.75, color="#4C72B0")
    ax.set_xlabel("identical misclassifications under attack (% of decisions)")
    ax.set_ylabel("SAT")
    if checkpoints is not None:
        ax = axes[0, 1]
        ax.errorbar(
            checkpoints["epoch"],
            checkpoints["sat_vs_final"],
            yerr=[  # clipped: a percentile bootstrap interval need not hold its point estimate
                (checkpoints["sat_vs_final"] - checkpoints["sat_low"]).clip(lower=0),
                (checkpoints["sat_high"] - checkpoints["sat_vs_final"]).clip(lower=0),
            ],
            marker="o",
            capsize=3,
            color="#55A868",
        )
        ax.set_xlabel("training epoch of the checkpoint")
        ax.set_ylabel("SAT with the final model")
        ax.set_title(str(checkpoints["model"].iloc[-1]), fontsize=9)
    if adversarial is not None:
        ax = axes[0, -1]
        own = ~adversarial["comparison"].str.startswith("run: ")
        colors = np.where(own, "#C44E52", "#8C8C8C")
        ax.barh(
            np.arange(len(adversarial)), adversarial["mean_sat"], xerr=adversarial["std_sat"], color=colors, capsize=3
        )
        ax.set_yticks(
            np.arange(len(adversarial)),
            [f"{c} ({p})" for c, p in zip(adversarial["comparison"], adversarial["pairs"], strict=True)],
            fontsize=7,
        )
        ax.invert_yaxis()
        ax.set_xlabel("mean SAT (± SD over pairs)")
        ax.set_title("adversarial training against the run's relations", fontsize=9)
    fig.tight_layout()
    return to_data_uri(fig)


def liang_synthetic_figure(results: dict[str, pd.DataFrame]) -> str:
    """Per configuration: the S->T metrics and the refit loss against the source's drift."""
    names = list(results)
    fig, axes = plt.subplots(2, (len(names) + 1) // 2, figsize=(4.2 * ((len(names) + 1) // 2), 6.4), squeeze=False)
    for ax, name in zip(axes.T.flat, names, strict=False):
        table = results[name]
        for column, color in (
            ("alpha_S_T", "#4C72B0"),
            ("gamma_S_T", "#55A868"),
            ("alpha_gamma_combined_S_T", "#8172B2"),
        ):
            ax.plot(table["scale"], table[column], marker="o", markersize=3, color=color, label=column)
        twin = ax.twinx()
        twin.plot(table["scale"], table["loss_f_S"], color="#C44E52", linestyle="--", label="loss_f_S (refit RMSE)")
        twin.tick_params(labelsize=7)
        ax.set_title(
            name.removeprefix("result_scale-").removesuffix(".csv").replace("rbf-n-50-d-10-m-100-N-5000-", ""),
            fontsize=8,
        )
        ax.set_xlabel("scale of the source's drift", fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [h for a in (axes.flat[0], fig.axes[-1]) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return to_data_uri(fig)


def knowledge_transfer_figure(table: pd.DataFrame, correlations: pd.DataFrame) -> str:
    """Each adversarial-transferability metric against the sources' last-layer transfer accuracy;
    colour: share of the target classes the source was trained on, marker: architecture."""
    pooled = correlations[correlations["group"] == "all"]
    metrics = list(pooled["metric"])
    columns = 3
    rows = -(-len(metrics) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.5 * rows), squeeze=False, constrained_layout=True)
    markers = dict(zip(sorted(table["architecture"].unique()), "osD^v<>p", strict=False))
    for ax, row in zip(axes.flat, pooled.itertuples(), strict=False):
        for architecture, part in table.groupby("architecture"):
            points = ax.scatter(
                part[row.metric],
                part["transfer_accuracy"],
                c=part["overlap"],
                cmap="viridis",
                vmin=0,
                vmax=100,
                marker=markers[architecture],
                s=30,
                label=architecture,
            )
        ax.set_xlabel(row.metric)
        ax.set_ylabel("transfer accuracy (%)")
        ax.set_title(
            f"all sources: Spearman {row.spearman:+.2f} (p {row.spearman_p:.2g})\nPearson {row.pearson:+.2f} (p "
            f"{row.pearson_p:.2g})",
            fontsize=8,
        )
    for ax in axes.flat[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.colorbar(points, ax=axes, label="target classes shared (%)", shrink=0.8)
    return to_data_uri(fig)


def calibration_figure(table: pd.DataFrame) -> str:
    """Per radius of a calibration: the mean absolute SAT difference from the published matrix and Spearman's rho
    (left), the white-box diagonal of the run against the published one (right); the best radius marked."""
    levels = table["levels"].to_numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(levels, table["mean_abs_diff"], marker="o", color="#4C72B0", label="mean |SAT - published|")
    left.set_xlabel("eps (levels of 1/255)")
    left.set_ylabel("mean absolute SAT difference", color="#4C72B0")
    twin = left.twinx()
    twin.plot(levels, table["spearman"], marker="s", color="#DD8452", label="Spearman")
    twin.set_ylabel("Spearman over pairs", color="#DD8452")
    best = table.loc[table["best"], "levels"]
    for value in best:
        left.axvline(value, color="#999", linestyle="--", linewidth=0.8)
    left.set_title("Off-diagonal agreement", fontsize=10)
    right.plot(levels, table["white_box_mean"], marker="o", color="#55A868", label="this run")
    right.axhline(table["published_white_box_mean"].iloc[0], color="#C44E52", linestyle="--", label="published")
    right.set_xlabel("eps (levels of 1/255)")
    right.set_ylabel("mean white-box SAT (ln %)")
    right.legend(fontsize=8)
    right.set_title("White-box diagonal", fontsize=10)
    fig.tight_layout()
    return to_data_uri(fig)
