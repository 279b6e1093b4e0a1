"""Automatic cards for the published table's 69 timm models against the published cards.

Every model is instantiated by archsim's own registry as ``timm:NAME,pretrained=false``
(random weights: the card depends on the structure only) and its card extracted
from a traced forward pass, one model per process over all cores. Prints the agreement per component and every
mismatch; ``--out DIR`` also writes ``extracted_cards.csv`` and ``agreement.csv``.

    python scripts/card_agreement.py ["../shared/data/sat_release/Model Feature_release.csv"] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from joblib import Parallel, delayed
from tqdm.auto import tqdm

from archsim.analysis.cards import card_agreement, cards_table, read_cards
from archsim.analysis.extract import extract_card
from archsim.models import create_model

DEFAULT_CARDS = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sat_release" / "Model Feature_release.csv"
)
# Published names that timm has since renamed without a deprecation alias.
RENAMED = {"gluon_xception65": "xception65"}


def card_of(name: str) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # timm's notes on renamed models
        return extract_card(create_model(f"timm:{RENAMED.get(name, name)},pretrained=false"))


def extracted_cards(names: list[str], n_jobs: int = -1):
    """The cards of ``names``, built over ``n_jobs`` processes (all cores by default): each model
    is built and traced on its own, and building one (its random weight init) is most of the time."""
    found = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(card_of)(name) for name in names)
    return cards_table(dict(zip(names, tqdm(found, total=len(names), desc="extract cards", unit="model"), strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", nargs="?", default=str(DEFAULT_CARDS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    published = read_cards(args.cards)
    started = time.perf_counter()
    extracted = extracted_cards(list(published.index))
    agreement = card_agreement(published, extracted)
    print(f"{len(extracted)} models, {time.perf_counter() - started:.0f} s")
    print(agreement[["component", "agree"]].to_string(index=False, float_format=lambda v: f"{100 * v:.1f} %"))
    cells = agreement["agree"].mul(agreement["models"]).sum() / agreement["models"].sum()
    print(f"all components: {100 * cells:.1f} %")
    for row in agreement.itertuples():
        for mismatch in filter(None, row.mismatches.split("; ")):
            print(f"  {row.component}: {mismatch}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        extracted.to_csv(args.out / "extracted_cards.csv")
        agreement.to_csv(args.out / "agreement.csv", index=False)


if __name__ == "__main__":
    main()
