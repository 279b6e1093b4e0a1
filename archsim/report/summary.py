"""The compact HTML summary a run shows in a notebook (``SatRun._repr_html_``)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from archsim.report.figures import ordered_heatmap

SHOWN_PAIRS = 5


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
