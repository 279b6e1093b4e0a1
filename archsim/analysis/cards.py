"""Model cards: the 13 architecture components of docs/method.md#analysis, in the published CSV layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from archsim.errors import ArchsimError, ParameterError

CARD_COLUMNS = (
    "Base architecture",
    "Hierarchical structure",
    "Stem layer",
    "Input resolution",
    "Normalization",
    "Activation",
    "Pooling (stem)",
    "Pooling (final)",
    "2D SA",
    "CW attention",
    "Location of CW attention",
    "DW conv",
    "Group conv",
)
NAME_COLUMN = "Model name"


def read_cards(path: str | Path) -> pd.DataFrame:
    """Cards indexed by model name, one column per component (``~`` = does not apply)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(
            "cards",
            f"cards file {path} {'is a folder' if path.is_dir() else 'does not exist'}; pass {{}} a CSV like "
            f"'Model Feature_release.csv'",
        )
    try:
        cards = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ArchsimError(f"cannot read cards file {path} ({type(error).__name__}); it must be a CSV") from None
    missing = [c for c in (NAME_COLUMN, *CARD_COLUMNS) if c not in cards.columns]
    if missing:
        raise ArchsimError(
            f"cards file {path} lacks column(s) {', '.join(missing)}; use the layout of 'Model Feature_release.csv'"
        )
    if cards[NAME_COLUMN].duplicated().any():
        raise ArchsimError(
            f"cards file {path} lists {cards[NAME_COLUMN][cards[NAME_COLUMN].duplicated()].iloc[0]!r} twice"
        )
    return cards.set_index(NAME_COLUMN)[list(CARD_COLUMNS)].apply(lambda col: col.str.strip())


def cards_for(cards: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The cards of ``names`` in that order; an error names the first model without one."""
    missing = [n for n in names if n not in cards.index]
    if missing:
        raise ArchsimError(f"model {missing[0]!r} ({len(missing)} in all) has no card; add it to the cards CSV")
    return cards.loc[names]


def card_agreement(reference: pd.DataFrame, extracted: pd.DataFrame) -> pd.DataFrame:
    """Per component: the share of models whose extracted value equals the reference card's.

    Compares the models both tables list; columns component, agree, models, mismatches
    (``model: reference -> extracted``, ``;``-separated).
    """
    names = [n for n in extracted.index if n in reference.index]
    if not names:
        raise ArchsimError("no model is in both card tables; compare cards of the same models")
    rows = []
    for component in CARD_COLUMNS:
        ref, got = reference.loc[names, component], extracted.loc[names, component]
        wrong = [f"{n}: {ref[n]} -> {got[n]}" for n in names if ref[n] != got[n]]
        rows.append(
            {
                "component": component,
                "agree": 1 - len(wrong) / len(names),
                "models": len(names),
                "mismatches": "; ".join(wrong),
            }
        )
    return pd.DataFrame(rows)


def cards_table(cards: dict[str, dict[str, str]]) -> pd.DataFrame:
    """Cards keyed by model name as a frame in the published layout (index: model name)."""
    return pd.DataFrame.from_dict(cards, orient="index", columns=list(CARD_COLUMNS)).rename_axis(NAME_COLUMN)
