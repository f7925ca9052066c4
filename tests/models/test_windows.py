import torch

from sppnet.engine.feature_cache import CachedMap
from sppnet.models.box_regression import BoxRegressorConfig, fit_box_regressors
from sppnet.models.windows import choose_scales, label_windows, pool_windows
from sppnet.ops import FeatureGeometry, box_iou, roi_spp


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
    boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0], [0.0, 0.0, 99.0, 99.0]])
    out = pool_windows(maps, boxes, geometry, (2, 1), target=40.0)
    # box 0 (50 x 40): at factor 1 about 44 px -> scale 100; box 1 (99 px): factor 1 still closest -> scale 100
    from sppnet.ops import boxes_to_rois
    rois = boxes_to_rois([boxes], geometry, "sppnet", feature_size=(25, 25))
    assert torch.equal(out, roi_spp(maps[100].features.float()[None], rois, (2, 1)))
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
