"""Window scoring shared by SPP-net and R-CNN: SVMs or the fine-tuned softmax."""

import math

import pytest
import torch

from sppnet.models.scoring import window_scores
from sppnet.models.svm import LinearSVMs


def _parts():
    generator = torch.Generator().manual_seed(0)
    fc7 = torch.rand(5, 3, generator=generator)
    fc8 = torch.nn.Linear(3, 3)  # background + 2 classes
    with torch.no_grad():
        fc8.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0]]))
        fc8.bias.copy_(torch.tensor([0.5, 0.0, 1.0]))
    svms = LinearSVMs(torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([0.25, -2.0]))
    return fc7, fc8, svms


def test_softmax_scores_are_the_object_classes_probabilities():
    fc7, fc8, svms = _parts()
    scores = window_scores(fc7, "softmax", svms, 2.0, fc8)
    for row, features in enumerate(fc7.tolist()):
        x, y, z = features
        logits = [x + 0.5, 2 * y, 1.0 - z]  # background, class 1, class 2
        total = sum(math.exp(v) for v in logits)
        assert scores[row].tolist() == pytest.approx([math.exp(logits[1]) / total, math.exp(logits[2]) / total],
                                                     rel=1e-6)


def test_svm_scores_are_decision_values_of_the_scaled_features():
    fc7, fc8, svms = _parts()
    scores = window_scores(fc7, "svm", svms, 2.0, fc8)
    for row, (x, y, z) in enumerate(fc7.tolist()):
        assert scores[row].tolist() == pytest.approx([2 * x - 2 * y + 0.25, 6 * z - 2.0], rel=1e-6)


def test_unknown_scorer_or_missing_svms_is_refused():
    fc7, fc8, svms = _parts()
    with pytest.raises(ValueError, match="scorer must be one of"):
        window_scores(fc7, "vote", svms, 1.0, fc8)
    with pytest.raises(ValueError, match="no SVMs yet"):
        window_scores(fc7, "svm", None, 1.0, fc8)
