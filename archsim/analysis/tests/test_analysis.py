from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archsim.analysis import cluster_keywords, component_importance, read_cards, read_matrix, spectral_clusters
from archsim.analysis.cards import cards_for
from archsim.analysis.run import analyze
from archsim.errors import ArchsimError

RELEASE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "sat_release"
MATRIX, CARDS = RELEASE / "SAT_release.csv", RELEASE / "Model Feature_release.csv"
needs_release = pytest.mark.skipif(not MATRIX.is_file(), reason="../shared/data/sat_release not beside the checkout")


def block_matrix():
    names = [f"m{i}" for i in range(6)]
    values = np.full((6, 6), 1.0)
    values[:3, :3] = values[3:, 3:] = 3.5
    np.fill_diagonal(values, 4.6)
    return pd.DataFrame(values, index=names, columns=names)


def test_spectral_recovers_blocks_and_eigengap():
    result = spectral_clusters(block_matrix(), seed=0)
    assert result.k == 2
    labels = result.labels.to_numpy()
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]


def test_importance_finds_the_component_that_drives_sat():
    sat = block_matrix()
    cards = pd.DataFrame({"driver": ["a"] * 3 + ["b"] * 3, "noise": list("xyxyxy")}, index=sat.index)
    table = component_importance(sat, cards, n_estimators=50, seed=0)
    assert table.component.iloc[0] == "driver"


def test_keywords_hand_case():
    cards = pd.DataFrame({"Base": ["CNN", "CNN", "ViT"], "Act": ["ReLU", "ReLU", "~"]}, index=list("abc"))
    words = cluster_keywords(cards, pd.Series([0, 0, 1], index=list("abc")), top=2)
    assert set(words[words.cluster == 0].word) == {"Base: CNN", "Act: ReLU"}
    assert words[words.cluster == 1].word.tolist()[0] == "Base: ViT"


@needs_release
def test_published_matrix_analysis_is_deterministic(tmp_path):
    first = analyze(MATRIX, CARDS, tmp_path / "a", k=10, seed=0)
    second = analyze(MATRIX, CARDS, tmp_path / "b", k=10, seed=0)
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first["clusters.csv"].cluster.nunique() == 10
    # The SAT paper's finding: base architecture and stem lead the importance ranking.
    assert set(first["importance.csv"].component.head(2)) == {"Base architecture", "Stem layer"}
    assert len(first["keywords.csv"]) == 50


def write(tmp_path, frame, name="m.csv"):
    path = tmp_path / name
    frame.to_csv(path)
    return path


def test_bad_matrices(tmp_path):
    sat = block_matrix()
    with pytest.raises(ArchsimError, match="not square"):
        read_matrix(write(tmp_path, sat.iloc[:, :5]))
    skew = sat.copy()
    skew.iloc[0, 1] = 0.0
    with pytest.raises(ArchsimError, match="not symmetric"):
        read_matrix(write(tmp_path, skew))
    with pytest.raises(ArchsimError, match="between 2 and the 6 models"):
        spectral_clusters(sat, k=7)


@needs_release
def test_names_missing_from_cards():
    cards = read_cards(CARDS)
    with pytest.raises(ArchsimError, match="has no card"):
        cards_for(cards, ["resnet50", "not_a_model"])
