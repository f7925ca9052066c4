import pytest
import torch
from torch import nn

from sppnet.models.backbones import ZF5
from sppnet.ops import FeatureGeometry, boxes_to_cells, boxes_to_rois, feature_geometry


def receptive_field_by_gradient(features: nn.Sequential, cell: int, image_size: int):
    """Independent reference: the input pixels that influence one output cell.

    A linear copy of the trunk (weights 1, max pools replaced by average pools
    of the same shape, pointwise layers dropped) gives every pixel of the
    receptive field a non-zero gradient."""
    layers = []
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            conv = nn.Conv2d(1, 1, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
            nn.init.ones_(conv.weight)
            layers.append(conv)
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode))
    probe = nn.Sequential(*layers).double()
    image = torch.zeros(1, 1, image_size, image_size, dtype=torch.float64, requires_grad=True)
    probe(image)[0, 0, cell, cell].backward()
    touched = (image.grad[0, 0] != 0).any(dim=0).nonzero().flatten()  # columns
    return touched.min().item(), touched.max().item()


def test_zf5_geometry_is_derived_from_its_layers():
    geometry = ZF5().geometry
    assert geometry.stride == 16
    assert geometry.offset == 20.0  # the authors' offset0 = 21 in 1-based pixels
    first, last = receptive_field_by_gradient(ZF5(width=0.05).features, cell=6, image_size=400)
    assert (first + last) / 2 == geometry.offset + geometry.stride * 6
    assert last - first + 1 == geometry.receptive_field


def test_geometry_of_dilated_and_same_padded_layers():
    layers = nn.Sequential(nn.Conv2d(1, 1, 3, padding="same", dilation=2), nn.ReLU(), nn.MaxPool2d(2))
    geometry = feature_geometry(layers)
    assert geometry == FeatureGeometry(stride=2, offset=0.5, receptive_field=6)
    first, last = receptive_field_by_gradient(layers, cell=4, image_size=20)
    assert (first + last) / 2 == geometry.offset + 2 * 4 and last - first + 1 == 6


def test_geometry_rejects_layers_it_cannot_follow():
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d"):
        feature_geometry(nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1)))
    with pytest.raises(ValueError, match="differs per axis"):
        feature_geometry(nn.Conv2d(1, 1, (3, 5)))


def test_sppnet_rule_is_the_papers_formula_for_same_padded_nets():
    # Same padding in every layer puts cell j's centre on pixel 16 j (offset 0):
    # left = floor(x / S) + 1, right = ceil(x / S) - 1 on the corner pixels.
    geometry = feature_geometry(nn.Sequential(*[nn.Conv2d(1, 1, 3, stride=2, padding=1) for _ in range(4)]))
    assert (geometry.stride, geometry.offset) == (16, 0.0)
    # pixels 16..63: floor(16/16)+1 = 2, ceil(63/16)-1 = 3
    boxes = torch.tensor([[16.0, 16.0, 64.0, 64.0], [0.0, 5.0, 100.0, 37.0]])
    # second: x pixels 0..99 -> 1, ceil(99/16)-1 = 6; y pixels 5..36 -> 1, ceil(36/16)-1 = 2
    assert boxes_to_cells(boxes, geometry, "sppnet").tolist() == [[2, 2, 3, 3], [1, 1, 6, 2]]


def test_sppnet_rule_on_zf5_hand_worked():
    geometry = ZF5().geometry  # stride 16, offset 20
    boxes = torch.tensor([[0.0, 0.0, 224.0, 224.0], [100.0, 100.0, 104.0, 104.0], [50.0, 60.0, 300.0, 200.0]])
    cells = boxes_to_cells(boxes, geometry, "sppnet")
    # box 0: floor(-20/16)+1 = -1, ceil(203/16)-1 = 12 (the authors' code gives 12 too)
    # box 1: pixels 100..103 -> left 6 > right 5: collapses to round((101.5-20)/16) = 5
    # box 2: x: floor(30/16)+1 = 2, ceil(279/16)-1 = 17; y: floor(40/16)+1 = 3, ceil(179/16)-1 = 11
    assert cells.tolist() == [[-1, -1, 12, 12], [5, 5, 5, 5], [2, 3, 17, 11]]
    clipped = boxes_to_cells(boxes, geometry, "sppnet", feature_size=(13, 13))
    assert clipped.tolist() == [[0, 0, 12, 12], [5, 5, 5, 5], [2, 3, 12, 11]]


def test_fast_rcnn_rule_hand_worked():
    geometry = FeatureGeometry(stride=16, offset=20.0, receptive_field=139)
    boxes = torch.tensor([[0.0, 0.0, 33.0, 17.0], [8.0, 23.0, 25.0, 40.0], [30.0, 30.0, 31.0, 31.0]])
    # box 0: x 0..32 -> round(0)=0, round(2.0)=2; y 0..16 -> 0, round(1.0)=1
    # box 1: x 8..24 -> round(0.5)=1 (half up), round(1.5)=2; y 23..39 -> round(1.4375)=1, round(2.4375)=2
    # box 2: x 30..30 -> round(1.875)=2, 2
    assert boxes_to_cells(boxes, geometry, "fast-rcnn").tolist() == [[0, 0, 2, 1], [1, 1, 2, 2], [2, 2, 2, 2]]


def test_cells_are_ordered_and_clipped_for_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 700 - 50
    wh = torch.rand(500, 2, generator=g) * 400
    boxes = torch.cat([xy, xy + wh], 1)
    for rule in ("sppnet", "fast-rcnn"):
        cells = boxes_to_cells(boxes, ZF5().geometry, rule, feature_size=(30, 40))
        assert (cells[:, 2] >= cells[:, 0]).all() and (cells[:, 3] >= cells[:, 1]).all()
        assert cells[:, [0, 2]].min() >= 0 and cells[:, [0, 2]].max() <= 39
        assert cells[:, [1, 3]].min() >= 0 and cells[:, [1, 3]].max() <= 29


def test_boxes_to_rois_numbers_images_in_order():
    geometry = ZF5().geometry
    boxes = [torch.tensor([[0.0, 0.0, 224.0, 224.0]]), torch.zeros(0, 4), torch.tensor([[50.0, 60, 300, 200]] * 2)]
    rois = boxes_to_rois(boxes, geometry, "sppnet", feature_size=(13, 13))
    assert rois.tolist() == [[0, 0, 0, 12, 12], [2, 2, 3, 12, 11], [2, 2, 3, 12, 11]]
    assert boxes_to_rois([], geometry).shape == (0, 5)


def test_bad_boxes_and_rules():
    geometry = ZF5().geometry
    with pytest.raises(ValueError, match="unknown cell rule"):
        boxes_to_cells(torch.zeros(1, 4), geometry, "nearest")
    with pytest.raises(ValueError, match=r"\(R, 4\)"):
        boxes_to_cells(torch.zeros(4), geometry)
    with pytest.raises(ValueError, match="NaN or inf"):
        boxes_to_cells(torch.tensor([[0.0, float("nan"), 1.0, 1.0]]), geometry)
    with pytest.raises(ValueError, match="feature_size"):
        boxes_to_cells(torch.zeros(1, 4), geometry, feature_size=(0, 3))
