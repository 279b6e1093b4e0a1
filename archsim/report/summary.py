"""The compact HTML summary a run shows in a notebook (``SatRun._repr_html_``)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from archsim.report.figures import ordered_heatmap

SHOWN_PAIRS = 5

MATRIX_SHOWN_UP_TO = 16
"""Runs of up to this many models print their whole matrix."""


def run_summary_html(run: Any) -> str:
    """Settings, the SAT heatmap (a PNG) and the most and least similar pairs of a run (a :class:`SatRun`)."""
    config = run.config
    settings = config["settings"]
    names = list(run.sat.index)
    attack = settings["attack"]
    options = ", ".join(f"{k}={v}" for k, v in attack.items() if k != "name")
    facts = [
        ("models", f"{len(names)}"),
        ("data", f"{settings['data'][:40]}{'...' if len(settings['data']) > 40 else ''}"),
        ("images", f"{config.get('n_images_used', '?')}"),
        ("attack", f"{attack['name']} ({options})"),
        ("seed", f"{settings['seed']}"),
        ("precision", f"{config.get('precision', 'fp32')}"),
        ("cache", f"{config.get('cache', '')}"),
    ]
    rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    heatmap = ordered_heatmap(run.sat, pd.Series(0, index=names), "SAT", "SAT (ln % fooled)", "viridis")
    return (
        "<div class='archsim-run'>"
        f"<b>archsim SAT run</b> of {len(names)} models"
        f"<table>{rows}</table>"
        f"<img alt='SAT matrix' style='max-width:480px' src='{heatmap}'>"
        f"{_pairs_table(run.pairs, ascending=False, title='Most similar pairs')}"
        f"{_pairs_table(run.pairs, ascending=True, title='Least similar pairs')}"
        "</div>"
    )


def _pairs_table(pairs: pd.DataFrame, ascending: bool, title: str) -> str:
    distinct = pairs[(pairs.source < pairs.target) & np.isfinite(pairs.sat)]
    chosen = distinct.sort_values("sat", ascending=ascending, kind="stable").head(SHOWN_PAIRS)
    interval = "sat_low" in chosen and chosen.sat_low.notna().any()
    head = "<tr><th>models</th><th>SAT</th>" + ("<th>95 % interval</th>" if interval else "") + "</tr>"
    body = "".join(
        f"<tr><td>{html.escape(str(row.source))} ~ {html.escape(str(row.target))}</td><td>{row.sat:.3f}</td>"
        + (f"<td>[{row.sat_low:.3f}, {row.sat_high:.3f}]</td>" if interval else "")
        + "</tr>"
        for row in chosen.itertuples()
    )
    return f"<p><b>{title}</b></p><table>{head}{body}</table>"


def run_summary_text(result: Any, *, out: Path, seconds: float) -> str:
    """What ``archsim run`` prints of a finished run (a :class:`~archsim.runs.SatRun` written to ``out``): the matrix
    (or where it is), the most and least similar pairs, each model's accuracy, the cost and what was written."""
    lines: list[str] = []
    echo = lines.append
    sat = result.sat
    if len(sat) <= MATRIX_SHOWN_UP_TO:
        echo("\nSAT matrix (ln % fooled; ln 100 = 4.61 is a perfect, fully transferable attack):")
        with pd.option_context("display.width", 250, "display.max_columns", 100):
            echo(sat.to_string(float_format=lambda v: f"{v:.2f}"))
    else:
        echo(
            f"\nSAT matrix: {len(sat)} x {len(sat)} in {out}/sat.csv (ln % fooled; ln 100 = 4.61 is a perfect, fully "
            f"transferable attack)"
        )
    names = list(sat.index)
    iu = np.triu_indices(len(names), k=1)
    pairs = pd.DataFrame({"a": np.array(names)[iu[0]], "b": np.array(names)[iu[1]], "sat": sat.values[iu]}).dropna()
    pairs = pairs.sort_values("sat", ascending=False)
    floor = result.config["settings"]["eps_s"]

    def show(rows: pd.DataFrame) -> None:
        for row in rows.itertuples():
            # At the floor eps_s the share fooled is anything up to eps_s, 0 included.
            share = f"<= {floor:g}" if row.sat <= np.log(floor) + 1e-9 else f"{np.exp(row.sat):.0f}"
            echo(f"  {row.a:>16} ~ {row.b:<16} SAT {row.sat:.2f} ({share}% fooled)")

    if pairs.empty:
        echo("\nno pair has a SAT: none shares an image both models classify right (see clean_accuracy)")
    elif len(pairs) <= 6:  # top and bottom three would overlap
        echo("\npairs, most similar first:")
        show(pairs)
    else:
        echo("\nmost similar pairs:")
        show(pairs.head(3))
        echo("least similar pairs:")
        show(pairs.tail(3).iloc[::-1])
    echo("\nper model:")
    table = result.models[["model", "clean_accuracy", "white_box_success", "family", "regime"]]
    echo(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    echo(
        f"\n{len(names)} models, {result.config['n_images_used']} images, attack "
        f"{result.config['settings']['attack']}; "
        f"cache: {result.cache_hits} hits, {result.cache_misses} computed; {seconds:.1f} s"
    )
    cost = result.config.get("cost")
    if cost is not None:
        skipped, total = cost["stage2_images_skipped"], len(names) ** 2 * result.config["n_images_used"]
        echo(
            f"evaluation: {cost['stage2_images_evaluated']} predictions computed; {skipped} of {total} not needed "
            f"(outside X_st, "
            f"{100 * skipped / max(total, 1):.0f}%); adversarial sets read {cost['stage2_read_ratio']:.2f}x "
            f"({cost['stage2_adversarial_bytes_read'] / 2**20:.1f} of {cost['adversarial_bytes'] / 2**20:.1f} MiB) in "
            f"{cost['stage2_groups']} group(s)"
        )
    for spec, problem in result.config.get("left_out", {}).items():
        echo(f"left out {spec}: {problem}")
    noise = result.config.get("attack_seed_noise")
    if noise is not None:
        echo(
            f"attack noise: {noise['seeds']} attack seeds, SAT rank correlation between seeds "
            f"{noise['spearman_mean']:.3f} "
            f"(min {noise['spearman_min']:.3f}, max {noise['spearman_max']:.3f}); per-pair spread in pairs.csv"
        )
    echo(f"wrote {out}/sat.csv, pairs.csv, models.csv, cards.csv, timings.csv, config.json")
    return "\n".join(lines)
