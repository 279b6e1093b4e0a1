import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score
from torch import nn

from archsim.measures import cka_matrix, disagreement, error_consistency, linear_cka
from archsim.models import Preprocess, SimModel, create_model
from archsim.models.features import classifier_layer, penultimate_features


def test_disagreement_by_hand():
    predictions = np.array([[0, 1, 2, 3], [0, 1, 2, 0], [1, 0, 2, 0]])
    expected = np.array([[0, 0.25, 0.75], [0.25, 0, 0.5], [0.75, 0.5, 0]])
    assert np.allclose(disagreement(predictions), expected)


def test_error_consistency_is_cohens_kappa_of_correctness():
    rng = np.random.default_rng(0)
    correct = rng.random((4, 300)) < np.array([[0.9], [0.8], [0.6], [0.95]])
    kappa = error_consistency(correct)
    for i in range(4):
        for j in range(4):
            assert np.isclose(kappa[i, j], cohen_kappa_score(correct[i], correct[j]))
    always = np.ones((2, 300), dtype=bool)  # two perfect models: nothing to be consistent about
    assert np.isnan(error_consistency(always)[0, 1])


def hsic_cka(x, y):
    """Reference: CKA from centred linear Gram matrices (Kornblith et al., eq. 3)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


def test_linear_cka_against_the_gram_formula_and_its_invariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 12))
    y = x @ rng.normal(size=(12, 7)) + 0.5 * rng.normal(size=(60, 7))
    assert np.isclose(linear_cka(x, y), hsic_cka(x, y))
    assert np.isclose(linear_cka(x, x), 1.0)
    rotation, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert np.isclose(linear_cka(x, 3.0 * x @ rotation + 2.0), 1.0)
    independent = rng.normal(size=(60, 7))
    assert linear_cka(x, independent) < linear_cka(x, y)
    matrix = cka_matrix([x, y, independent])
    assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1.0)
    assert np.isclose(matrix[0, 1], linear_cka(x, y)) and np.isclose(matrix[1, 2], linear_cka(y, independent))


def test_penultimate_features_are_the_classifier_input():
    model = create_model("timm:resnet18,pretrained=false,num_classes=10")
    assert classifier_layer(model) is model.net.fc
    images = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    features = penultimate_features(model, images, batch_size=2)
    assert features.shape == (5, 512)
    with torch.inference_mode():
        logits = model(images.float() / 255)
    assert torch.allclose(model.net.fc(features), logits, atol=1e-4)


def test_classifier_found_without_names():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 6), nn.ReLU(), nn.Linear(6, 3))
    model = SimModel(net, Preprocess((1, 16, 16), (0.5,), (0.5,)), "seq", "test:seq")
    assert classifier_layer(model) is net[5]
