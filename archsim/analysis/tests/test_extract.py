import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from archsim.analysis.cards import CARD_COLUMNS, card_agreement, cards_table, read_cards
from archsim.analysis.extract import extract_card, extract_card_from_module
from archsim.errors import ArchsimError
from archsim.models import Preprocess, SimModel, create_model

RELEASE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "sat_release"
CARDS = RELEASE / "Model Feature_release.csv"
needs_release = pytest.mark.needs("sat_release")  # skips where missing, fails under CI=true (conftest)


class TinyNet(nn.Module):
    """A hand-made CNN whose card is known by construction."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block = nn.Sequential(
            nn.Conv2d(8, 16, 3, padding=1, groups=4),
            nn.BatchNorm2d(16),
            nn.SiLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16),
        )
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.block(x)
        return self.fc(x.mean((2, 3)))


def test_hand_built_network_card():
    card = extract_card_from_module(TinyNet(), (3, 32, 32))
    assert card == {
        "Base architecture": "CNN",
        "Hierarchical structure": "Yes",
        "Stem layer": "5s2",
        "Input resolution": "32 x 32",
        "Normalization": "BN",
        "Activation": "ReLU + SiLU",
        "Pooling (stem)": "Yes",
        "Pooling (final)": "GAP",
        "2D SA": "No",
        "CW attention": "No",
        "Location of CW attention": "~",
        "DW conv": "Yes",
        "Group conv": "Yes",
    }


def test_trace_leaves_the_model_untouched():
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    extract_card_from_module(net, (3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert next(net.parameters()).device.type == "cpu"


@needs_release
@pytest.mark.parametrize(
    "name",
    [
        "resnet50",
        "seresnext50_32x4d",
        "vit_small_patch16_224",
        "efficientnet_b2",
        "halonet50ts",
        "convnext_tiny",
        "resmlp_24_224",
        "eca_nfnet_l0",
        "xcit_tiny_12_p8_224",
        "swin_tiny_patch4_window7_224",
        "gluon_resnet101_v1c",
        "coat_lite_small",
    ],
)
def test_cards_match_the_published_table(name):
    published = read_cards(CARDS).loc[name].to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(f"timm:{name},pretrained=false")
    assert extract_card(model) == published


def test_card_of_a_model_without_input_size_is_refused():
    model = SimModel(TinyNet(), Preprocess(None, [0.5], [0.5]), "tiny", "file:x")
    with pytest.raises(ArchsimError, match="declares no input size"):
        extract_card(model)


def test_card_agreement_counts_mismatches():
    a = cards_table({"m1": dict.fromkeys(CARD_COLUMNS, "x"), "m2": dict.fromkeys(CARD_COLUMNS, "x")})
    b = a.copy()
    b.loc["m2", "Stem layer"] = "y"
    table = card_agreement(a, b).set_index("component")
    assert table.loc["Stem layer", "agree"] == 0.5 and table.loc["Stem layer", "mismatches"] == "m2: x -> y"
    assert table.drop("Stem layer")["agree"].eq(1.0).all()
    with pytest.raises(ArchsimError, match="no model is in both"):
        card_agreement(a, b.rename(index={"m1": "z1", "m2": "z2"}))


@needs_release
@pytest.mark.scale
def test_agreement_with_all_published_cards():
    """All 69 published models: the figures the README reports (recomputed; they must not regress). Beside the
    68-architecture run in `make test-scale`: it builds every architecture of the paper too."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
    from card_agreement import extracted_cards

    published = read_cards(CARDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agreement = card_agreement(published, extracted_cards(list(published.index))).set_index("component")["agree"]
    assert agreement.min() >= 0.9
    assert agreement.mean() >= 0.98


def test_a_network_of_linear_layers_alone_is_no_cnn():
    from torch import nn

    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10))
    card = extract_card(SimModel(net, Preprocess((3, 8, 8), [0.5], [0.5]), "mlp", "file:mlp"))
    assert card["Base architecture"] == "MLP"
