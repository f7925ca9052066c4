import pytest
import torch
from torch.nn import functional as F

from sppnet import SpatialPyramidPooling, spatial_pyramid_pool


def adaptive_reference(x, levels, pool=F.adaptive_max_pool2d):
    return torch.cat([pool(x, n).flatten(1) for n in levels], 1)


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (2, 3), (3, 2), (5, 5), (6, 6), (7, 13), (13, 13), (11, 11), (40, 1)])
def test_any_size_gives_fixed_length_equal_to_adaptive_pooling(size):
    x = torch.randn(3, 4, *size, generator=torch.Generator().manual_seed(sum(size)))
    out = spatial_pyramid_pool(x, (6, 3, 2, 1))
    assert out.shape == (3, 4 * 50)
    assert torch.equal(out, adaptive_reference(x, (6, 3, 2, 1)))


def test_module_out_features_repr_and_validation():
    spp = SpatialPyramidPooling()
    assert spp.levels == (6, 3, 2, 1) and spp.out_features(256) == 12800
    assert SpatialPyramidPooling((4, 3, 2, 1)).out_features(256) == 7680
    assert repr(spp) == "SpatialPyramidPooling(levels=(6, 3, 2, 1), mode='max', bins=50)"
    with pytest.raises(ValueError, match="mode"):
        SpatialPyramidPooling(mode="median")
    with pytest.raises(ValueError, match="positive int"):
        SpatialPyramidPooling((3, -1))


def test_module_backward_reaches_input():
    x = torch.randn(2, 3, 9, 7, requires_grad=True)
    SpatialPyramidPooling((3, 1))(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_padded_batch_pools_each_valid_region_only():
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(5, h, w, generator=g) for h, w in [(3, 9), (13, 13), (1, 2)]]
    padded = torch.full((3, 5, 13, 13), 1e9)  # padding larger than any value: must never be pooled
    for i, image in enumerate(images):
        padded[i, :, : image.shape[1], : image.shape[2]] = image
    sizes = torch.tensor([[3, 9], [13, 13], [1, 2]])
    for mode, pool in (("max", F.adaptive_max_pool2d), ("avg", F.adaptive_avg_pool2d)):
        out = SpatialPyramidPooling((6, 2, 1), mode=mode)(padded, sizes)
        expected = torch.cat([adaptive_reference(image[None], (6, 2, 1), pool) for image in images])
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_avg_mode_matches_adaptive_avg_pool():
    x = torch.randn(2, 3, 11, 5)
    out = SpatialPyramidPooling((4, 3, 2, 1), mode="avg")(x)
    torch.testing.assert_close(out, adaptive_reference(x, (4, 3, 2, 1), F.adaptive_avg_pool2d))


@pytest.mark.parametrize(
    "sizes, match",
    [
        (torch.tensor([[3, 3]]), r"\(2, 2\)"),
        (torch.tensor([[3, 3], [0, 2]]), "1..5 x 1..6"),
        (torch.tensor([[3, 3], [6, 2]]), "1..5 x 1..6"),
        (torch.tensor([[3.5, 3], [2, 2]]), "whole numbers"),
    ],
)
def test_bad_sizes(sizes, match):
    with pytest.raises(ValueError, match=match):
        spatial_pyramid_pool(torch.zeros(2, 1, 5, 6), (2,), sizes)


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="N, C, H, W"):
        spatial_pyramid_pool(torch.zeros(1, 5, 6), (2,))
    with pytest.raises(ValueError, match="H, W >= 1"):
        SpatialPyramidPooling(mode="avg")(torch.zeros(1, 1, 0, 6))
    with pytest.raises(ValueError, match="H, W >= 1"):
        SpatialPyramidPooling()(torch.zeros(1, 1, 4, 0))
