"""The explorable parts of the report: Plotly heatmaps of the SAT matrix and the spectral distances (hover, zoom,
pan), a model finder, and tables that sort and filter. plotly.js is embedded once, so the page fetches nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.offline

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}


def plotly_script() -> str:
    """plotly.js itself, inline: the page opens from a file on a machine without network."""
    return f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>'


def cluster_order(labels: pd.Series) -> list[str]:
    """Models grouped by cluster, in their given order within a cluster."""
    return list(labels.sort_values(kind="stable").index)


def _boundaries(labels: pd.Series, order: list[str]) -> list[dict]:
    """Lines between the clusters' blocks, in the axes' category coordinates."""
    clusters = labels.loc[order].to_numpy()
    edges = [k - 0.5 for k in range(1, len(order)) if clusters[k] != clusters[k - 1]]
    line = {"color": "white", "width": 2}
    return [
        shape
        for edge in edges
        for shape in (
            {"type": "line", "x0": edge, "x1": edge, "y0": -0.5, "y1": len(order) - 0.5, "line": line},
            {"type": "line", "x0": -0.5, "x1": len(order) - 0.5, "y0": edge, "y1": edge, "line": line},
        )
    ]


def _pair_details(pairs: pd.DataFrame | None, order: list[str]) -> np.ndarray | None:
    """[N, N, 5] per cell: the SAT interval, the fooled % each way and |X_AB|, from a run's pairs table."""
    columns = ["sat_low", "sat_high", "fool_rate_source_to_target", "fool_rate_target_to_source", "n_both_correct"]
    if pairs is None or not set(columns) <= set(pairs.columns):
        return None
    index = {name: k for k, name in enumerate(order)}
    details = np.full((len(order), len(order), len(columns)), np.nan)
    for row in pairs.itertuples(index=False):
        a, b = index.get(row.source), index.get(row.target)
        if a is None or b is None:
            continue
        values = [getattr(row, c) for c in columns]
        details[a, b] = values
        # The table holds each unordered pair once (source before target); the other cell reads it the other way.
        details[b, a] = [values[0], values[1], values[3], values[2], values[4]]
    return details


def matrix_heatmap(
    matrix: pd.DataFrame,
    labels: pd.Series,
    div_id: str,
    value_name: str,
    colorscale: str,
    pairs: pd.DataFrame | None = None,
) -> str:
    """A heatmap of ``matrix`` with models ordered by cluster and the clusters' boundaries drawn; hovering a cell
    names both models and the value (with ``pairs`` of a run: the 95 % interval, the fooled share each way and
    |X_AB|)."""
    order = cluster_order(labels)
    values = matrix.loc[order, order].to_numpy(dtype=float)
    details = _pair_details(pairs, order)
    cluster_of = labels.loc[order].to_numpy()
    hover = (
        "<b>%{y}</b> (cluster %{customdata[5]}) and <b>%{x}</b> (cluster %{customdata[6]})<br>"
        + f"{value_name} %{{z:.3f}}"
    )
    extra = np.stack(np.broadcast_arrays(cluster_of[:, None], cluster_of[None, :]), axis=-1).astype(float)
    if details is not None:
        hover += (
            " [%{customdata[0]:.3f}, %{customdata[1]:.3f}] (95 % bootstrap)"
            "<br>attacks made on %{y} fool %{x} on %{customdata[2]:.1f} % of X_AB"
            "<br>attacks made on %{x} fool %{y} on %{customdata[3]:.1f} % of X_AB"
            "<br>|X_AB| (both right when clean): %{customdata[4]:.0f} images"
        )
        customdata = np.concatenate([details, extra], axis=-1)
    else:
        customdata = np.concatenate([np.full((*values.shape, 5), np.nan), extra], axis=-1)
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=order,
            y=order,
            customdata=customdata,
            colorscale=colorscale,
            colorbar={"title": {"text": value_name}},
            hovertemplate=hover + "<extra></extra>",
            hoverongaps=False,
        )
    )
    side = min(900, 300 + 12 * len(order))
    figure.update_layout(
        width=side + 180,
        height=side + 120,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        shapes=_boundaries(labels, order),
        xaxis={"tickangle": -60, "tickfont": {"size": 9}, "side": "top"},
        yaxis={"autorange": "reversed", "tickfont": {"size": 9}},
        plot_bgcolor="white",
    )
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def finder_data(sat: pd.DataFrame, labels: pd.Series, pairs: pd.DataFrame | None, cards: pd.DataFrame | None) -> str:
    """The JSON the model finder reads: names, SAT, intervals where known, clusters and cards."""
    names = list(sat.index)
    details = _pair_details(pairs, names)

    def rows(array: np.ndarray) -> list[list[float | None]]:
        return [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in array]

    data = {
        "names": names,
        "sat": rows(sat.to_numpy(dtype=float)),
        "low": rows(details[..., 0]) if details is not None else None,
        "high": rows(details[..., 1]) if details is not None else None,
        "cluster": {name: int(labels[name]) for name in names},
        "cards": None
        if cards is None
        else {str(k): {str(c): str(v) for c, v in row.items()} for k, row in cards.iterrows() if k in set(names)},
    }
    # "</script" would end the element early and "<!--" change how it is read: every "<" escaped, as JSON allows.
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


FINDER_HTML = """
<p><label for="model-finder">Find a model: </label>
<input id="model-search" list="model-names" placeholder="type a name" autocomplete="off">
<select id="model-finder"><option value="">(choose)</option>{options}</select></p>
<datalist id="model-names">{options}</datalist>
<div id="finder-result" class="muted">Its nearest and farthest models (by SAT) and its card appear here; its row and
column are marked in the SAT heatmap.</div>
"""

# The page's own behaviour, kept small: the model finder and sortable, filterable tables. The heatmaps are Plotly's.
SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById("archsim-data").textContent);
  const heatmap = document.getElementById("sat-heatmap");
  const baseShapes = heatmap && heatmap.layout ? (heatmap.layout.shapes || []).slice() : [];
  function fmt(v) { return v === null || v === undefined ? "" : v.toFixed(3); }
  function row(cells, tag) {
    return "<tr>" + cells.map(c => "<" + tag + ">" + c + "</" + tag + ">").join("") + "</tr>";
  }
  function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
  function show(name) {
    const out = document.getElementById("finder-result");
    const i = data.names.indexOf(name);
    if (i < 0) { out.textContent = "no model named " + name; return; }
    const others = data.names.map((n, j) => ({ n: n, j: j, s: data.sat[i][j] }))
      .filter(o => o.j !== i && o.s !== null).sort((a, b) => b.s - a.s);
    // A bare matrix (analyze --matrix) has no intervals: the column is left out.
    const interval = j => data.low ? ["[" + fmt(data.low[i][j]) + ", " + fmt(data.high[i][j]) + "]"] : [];
    const line = o => row([esc(o.n), fmt(o.s), ...interval(o.j), String(data.cluster[o.n])], "td");
    const head = row(["model", "SAT", ...(data.low ? ["95 % interval"] : []), "cluster"], "th");
    let html = "<p><b>" + esc(name) + "</b>, cluster " + data.cluster[name] + "</p>";
    html += "<div class='figures'><div><p>Nearest (highest SAT)</p><table id='finder-nearest'><thead>" + head +
      "</thead><tbody>" + others.slice(0, 5).map(line).join("") + "</tbody></table></div>";
    html += "<div><p>Farthest (lowest SAT)</p><table id='finder-farthest'><thead>" + head + "</thead><tbody>" +
      others.slice(-5).reverse().map(line).join("") + "</tbody></table></div>";
    if (data.cards && data.cards[name]) {
      const card = Object.entries(data.cards[name]).map(e => row([esc(e[0]), esc(e[1])], "td"));
      html += "<div><p>Card</p><table>" + card.join("") + "</table></div>";
    }
    out.innerHTML = html + "</div>";
    out.className = "";
    if (heatmap && window.Plotly) {
      const k = heatmap.data[0].y.indexOf(name), n = data.names.length, mark = { color: "red", width: 2 };
      Plotly.relayout(heatmap, { shapes: baseShapes.concat([
        { type: "rect", x0: -0.5, x1: n - 0.5, y0: k - 0.5, y1: k + 0.5, line: mark },
        { type: "rect", x0: k - 0.5, x1: k + 0.5, y0: -0.5, y1: n - 0.5, line: mark }]) });
    }
  }
  const select = document.getElementById("model-finder");
  const search = document.getElementById("model-search");
  if (select) select.addEventListener("change", () => { if (select.value) show(select.value); });
  if (search) search.addEventListener("change", () => { if (search.value) show(search.value); });

  function cellValue(cell) {
    const text = cell.textContent.trim();
    const number = Number(text);
    return text !== "" && !isNaN(number) ? number : text.toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(table => {
    table.querySelectorAll("thead th").forEach((th, col) => {
      th.title = "sort";
      th.style.cursor = "pointer";
      th.addEventListener("click", () => {
        const body = table.tBodies[0];
        const ascending = th.dataset.order !== "asc";
        table.querySelectorAll("thead th").forEach(h => delete h.dataset.order);
        th.dataset.order = ascending ? "asc" : "desc";
        const rows = Array.from(body.rows);
        rows.sort((a, b) => {
          const x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
          const blankX = x === "", blankY = y === "";
          if (blankX || blankY) return blankX - blankY;
          const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
          return ascending ? order : -order;
        });
        rows.forEach(r => body.appendChild(r));
      });
    });
  });
  document.querySelectorAll("input.table-filter").forEach(input => {
    input.addEventListener("input", () => {
      const table = document.getElementById(input.dataset.table);
      const words = input.value.toLowerCase();
      Array.from(table.tBodies[0].rows).forEach(r => {
        r.style.display = r.textContent.toLowerCase().includes(words) ? "" : "none";
      });
    });
  });
})();
"""
