import pytest
import torch
from torch import nn

from sppnet.models.detection.fast_rcnn import FastRCNNHead
from sppnet.models.svd import compress_fc, compressed_ranks, truncated_svd


def _low_rank_linear(in_features: int, out_features: int, rank: int, noise: float = 0.0) -> nn.Linear:
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        weight = torch.randn(out_features, rank, generator=generator) @ torch.randn(rank, in_features, generator=generator)
        layer.weight.copy_(weight + noise * torch.randn(out_features, in_features, generator=generator))
        layer.bias.copy_(torch.randn(out_features, generator=generator))
    return layer


def test_exact_for_a_matrix_of_that_rank():
    layer = _low_rank_linear(60, 40, rank=8)
    x = torch.randn(5, 60)
    compressed = truncated_svd(layer, 8)
    assert compressed[0].weight.shape == (8, 60) and compressed[0].bias is None
    assert compressed[1].weight.shape == (40, 8)
    assert torch.allclose(compressed(x), layer(x), atol=1e-3)


def test_error_is_the_discarded_singular_values():
    layer = _low_rank_linear(50, 30, rank=30)
    singular = torch.linalg.svdvals(layer.weight.detach().double())
    for rank in (1, 5, 20):
        approx = truncated_svd(layer, rank)
        product = (approx[1].weight.double() @ approx[0].weight.double())
        # Eckart-Young: the Frobenius error is the norm of the dropped singular values.
        error = torch.linalg.matrix_norm(layer.weight.double() - product)
        assert error.item() == pytest.approx(singular[rank:].norm().item(), rel=1e-4)


def test_compressed_head_approximates_the_original():
    fc6 = nn.Sequential(_low_rank_linear(200, 64, rank=16, noise=0.01), nn.ReLU())
    fc7 = nn.Sequential(_low_rank_linear(64, 64, rank=8, noise=0.01), nn.ReLU())
    head = FastRCNNHead(fc6, fc7, 5).eval()
    x = torch.randn(20, 200)
    before = [t.clone() for t in head(x)]
    compress_fc(head, (16, 8))
    assert compressed_ranks(head) == (16, 8)
    after = head(x)
    for a, b in zip(before, after):
        assert ((a - b).norm() / a.norm()).item() < 0.02
    with pytest.raises(ValueError, match="already compressed"):
        compress_fc(head, (16, 8))


def test_bad_ranks_are_refused_with_the_value():
    layer = nn.Linear(10, 6)
    for rank in (0, 6, 100, 2.5):
        with pytest.raises(ValueError, match="rank must be"):
            truncated_svd(layer, rank)
