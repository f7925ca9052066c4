import pytest
import torch

from sppnet.models.windows import CachedMap
from sppnet.models.box_regression import BoxRegressorConfig, fit_box_regressors
from sppnet.models.windows import (
    WindowPooler, cached_window_pooler, choose_scales, label_windows, pool_windows, pooled_fc6,
)
from sppnet.ops import BoxCoder, FeatureGeometry, box_iou, roi_spp


def test_label_windows_hand_worked():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    proposals = torch.tensor([
        [0.0, 0.0, 10.0, 8.0],    # IoU 0.8 with gt 0 -> class 2
        [0.0, 0.0, 10.0, 3.0],    # IoU 0.3 -> background
        [50.0, 50.0, 60.0, 60.0],  # IoU 0 -> ignored in fine-tuning
        [20.0, 20.0, 30.0, 26.0],  # IoU 0.6 with gt 1, which is difficult -> ignored
    ])
    labelled = label_windows(proposals, gt, torch.tensor([2, 1]), num_classes=3,
                             gt_difficult=torch.tensor([False, True]))
    assert labelled.labels.tolist() == [2, -1, 2, 0, -1, -1]
    assert labelled.is_gt.tolist() == [True, True, False, False, False, False]
    torch.testing.assert_close(labelled.overlaps, torch.tensor([1.0, 1.0, 0.8, 0.3, 0.0, 0.6]))
    assert labelled.class_overlaps[2, 1].item() == 0.0 and abs(labelled.class_overlaps[2, 2].item() - 0.8) < 1e-6


def test_choose_scales_picks_the_area_closest_to_224_squared():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 400.0, 400.0]])
    # factors 1, 2: box 0 is 100 or 200 wide -> 200 (scale 1); box 1 is 400 or 800 -> 400 (scale 0)
    assert choose_scales(boxes, [1.0, 2.0]).tolist() == [1, 0]


def test_pool_windows_uses_each_windows_scale_and_mirrors():
    geometry = FeatureGeometry(stride=4, offset=1.5, receptive_field=7)
    maps = {s: CachedMap(torch.randn(3, s // 4, s // 4).half(), s, s / 100) for s in (100, 200)}
    boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0], [10.0, 10.0, 30.0, 30.0]])
    out = pool_windows(maps, boxes, geometry, (2, 1), target=40.0)
    # box 0 (50 x 40): sqrt(area) 44.7 at factor 1, 89 at factor 2 -> scale 100;
    # box 1 (20 x 20): 20 at factor 1, 40 at factor 2 -> scale 200, pooled from the 50 x 50 map.
    assert choose_scales(boxes, [1.0, 2.0], 40.0).tolist() == [0, 1]
    from sppnet.ops import boxes_to_rois
    at_100 = boxes_to_rois([boxes[:1]], geometry, "sppnet", feature_size=(25, 25))
    at_200 = boxes_to_rois([boxes[1:] * 2], geometry, "sppnet", feature_size=(50, 50))
    assert torch.equal(out[:1], roi_spp(maps[100].features.float()[None], at_100, (2, 1)))
    assert torch.equal(out[1:], roi_spp(maps[200].features.float()[None], at_200, (2, 1)))
    assert not torch.equal(out[1:], roi_spp(maps[100].features.float()[None],
                                            boxes_to_rois([boxes[1:]], geometry, "sppnet", feature_size=(25, 25)), (2, 1)))
    mirrored = pool_windows(maps, boxes, geometry, (2, 1), target=40.0, flipped=True, image_width=100.0)
    flipped_boxes = torch.stack([100 - boxes[:, 2], boxes[:, 1], 100 - boxes[:, 0], boxes[:, 3]], 1)
    assert torch.equal(mirrored, pool_windows(maps, flipped_boxes, geometry, (2, 1), target=40.0))


def test_box_regression_moves_boxes_towards_ground_truth():
    torch.manual_seed(0)
    gt = torch.tensor([40.0, 40.0, 100.0, 120.0])
    jitter = torch.randn(200, 4) * 6
    boxes = gt + jitter
    # features that carry the displacement (as conv features of a shifted window would)
    features = torch.cat([jitter, torch.randn(200, 4) * 0.1], 1)
    regressors = fit_box_regressors(features, boxes, gt.expand(200, 4), torch.ones(200, dtype=torch.long),
                                    box_iou(boxes, gt[None])[:, 0], num_classes=2,
                                    config=BoxRegressorConfig(ridge=1.0, min_overlap=0.5))
    moved = regressors.apply(features, boxes, torch.ones(200, dtype=torch.long))
    before = box_iou(boxes, gt[None]).mean()
    after = box_iou(moved, gt[None]).mean()
    assert after > before + 0.05 and after > 0.9


@pytest.mark.parametrize("windows, dim", [(30, 200), (300, 20)])  # dual (fewer windows than features) and primal
def test_box_regression_solves_the_ridge_problem_of_its_docstring(windows, dim):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(windows, dim, generator=generator)
    boxes = torch.rand(windows, 2, generator=generator).repeat(1, 2) * 50 + torch.tensor([0.0, 0.0, 20.0, 30.0])
    targets = boxes + torch.randn(windows, 4, generator=generator)
    labels = torch.ones(windows, dtype=torch.long)
    ridge = 7.0
    regressors = fit_box_regressors(features, boxes, targets, labels, torch.ones(windows), num_classes=2,
                                    config=BoxRegressorConfig(ridge=ridge, min_overlap=0.5), feature_scale=0.5)
    # Reference: the stacked least-squares system [x; sqrt(ridge) I] W = [t; 0] (no normal equations).
    x = torch.cat([features.double() * 0.5, torch.ones(windows, 1, dtype=torch.float64)], 1)
    t = BoxCoder().encode(boxes.double(), targets.double())
    stacked = torch.cat([x, ridge ** 0.5 * torch.eye(dim + 1, dtype=torch.float64)])
    expected = torch.linalg.lstsq(stacked, torch.cat([t, torch.zeros(dim + 1, 4, dtype=torch.float64)])).solution
    torch.testing.assert_close(regressors.weights[1].double(), expected, atol=1e-5, rtol=1e-4)
    assert regressors.weights[0].abs().max() == 0


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_pooled_fc6_in_blocks_equals_fc6_of_every_pooled_window(block):
    torch.manual_seed(0)
    geometry = FeatureGeometry(stride=4, offset=1.5, receptive_field=7)
    maps = {s: CachedMap(torch.randn(5, s // 4, s // 4).half(), s, s / 100) for s in (100, 200, 300)}
    corners = torch.rand(150, 2) * 80
    boxes = torch.cat([corners, corners + 4 + torch.rand(150, 2) * 60], 1)
    levels = (3, 2, 1)
    reference = pool_windows(maps, boxes, geometry, levels, target=40.0)  # the whole pooled matrix at once
    pooler = cached_window_pooler(maps, boxes, geometry, levels, target=40.0)
    assert len(set(pooler.scale_of.tolist())) == 3, "the windows must be spread over every scale"
    # Any rows, any order: the same vectors as the whole matrix's rows.
    rows = torch.tensor([149, 0, 77, 3])
    assert torch.equal(pooler.pool(rows), reference[rows])
    assert torch.equal(pooler.pool(slice(10, 20)), reference[10:20])
    fc6 = torch.nn.Sequential(torch.nn.Linear(reference.shape[1], 32), torch.nn.ReLU())
    with torch.no_grad():
        torch.testing.assert_close(pooled_fc6(pooler, fc6, block=block), fc6(reference), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="block"):
        pooled_fc6(pooler, fc6, block=0)


def test_window_pooler_from_boxes_pools_fast_rcnn_rois_at_each_windows_scale():
    geometry = FeatureGeometry(stride=4, offset=1.5, receptive_field=7)
    maps = [torch.randn(1, 3, 25, 25), torch.randn(1, 3, 50, 50)]
    boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0], [10.0, 10.0, 30.0, 30.0]])
    pooler = WindowPooler.from_boxes(maps, [1.0, 2.0], boxes, geometry, (2, 1), "fast-rcnn", 40.0)
    from sppnet.ops import boxes_to_rois
    expected = torch.cat([
        roi_spp(maps[0], boxes_to_rois([boxes[:1]], geometry, "fast-rcnn", feature_size=(25, 25)), (2, 1)),
        roi_spp(maps[1], boxes_to_rois([boxes[1:] * 2], geometry, "fast-rcnn", feature_size=(50, 50)), (2, 1)),
    ])
    assert torch.equal(pooler.pool(), expected)
