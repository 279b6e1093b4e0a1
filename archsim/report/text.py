"""Results as text, for the terminal and for ``print`` in Python: tables as the CLI shows them."""

from __future__ import annotations

import pandas as pd


def table_text(table: pd.DataFrame, columns: list[str] | None = None) -> str:
    """``table`` (or its ``columns``) without the index, numbers to 3 significant digits, up to 200 columns wide."""
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        return (table if columns is None else table[columns]).to_string(index=False, float_format=lambda v: f"{v:.3g}")
