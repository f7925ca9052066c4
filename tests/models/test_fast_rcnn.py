import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sppnet.models.backbones import build_backbone
from sppnet.models.classifier import SPPClassifier
from sppnet.models.detection.fast_rcnn import (
    FastRCNN, FastRCNNHead, RoISampling, fast_rcnn_loss, freeze_first_convs, load_head_fc, roi_losses, sample_rois,
    smooth_l1,
)
from sppnet.ops import BoxCoder, box_iou, mirror_boxes
from tests.mirror import assert_mirror_symmetric

STDS = (0.1, 0.1, 0.2, 0.2)


def test_smooth_l1_hand_worked_and_matches_torch():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    assert torch.allclose(smooth_l1(x), torch.tensor([1.5, 0.125, 0.0, 0.125, 0.5, 2.5]))
    y = torch.randn(1000) * 3
    assert torch.allclose(smooth_l1(y), F.smooth_l1_loss(y, torch.zeros_like(y), reduction="none", beta=1.0))


def test_multi_task_loss_hand_worked():
    # Two RoIs, K + 1 = 3 classes: RoI 0 is class 2, RoI 1 background.
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [0.0, 0.0, 0.0]])
    deltas = torch.zeros(2, 12)
    deltas[0, 8:12] = torch.tensor([0.5, -2.0, 0.0, 1.0])  # class 2's deltas
    deltas[1, 0:4] = 100.0  # background RoIs have no box loss
    targets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    labels = torch.tensor([2, 0])
    cls, box = fast_rcnn_loss(logits, deltas, labels, targets, box_weight=1.0)
    expected_cls = (-math.log(2 / 4) - math.log(1 / 3)) / 2
    assert cls.item() == pytest.approx(expected_cls, rel=1e-6)
    # smooth-L1: 0.125 + 1.5 + 0 + 0.5, divided by the 2 RoIs.
    assert box.item() == pytest.approx((0.125 + 1.5 + 0.0 + 0.5) / 2, rel=1e-6)
    _, doubled = fast_rcnn_loss(logits, deltas, labels, targets, box_weight=2.0)
    assert doubled.item() == pytest.approx(2 * box.item())


def test_box_targets_are_normalised_by_the_stds():
    proposal = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[1.0, 1.0, 11.0, 13.0]])  # IoU 81 / 139 = 0.58: foreground
    # dx = (6 - 5) / 10 = 0.1, dy = (7 - 5) / 10 = 0.2, dw = log 1 = 0, dh = log 1.2.
    expected = torch.tensor([[0.1 / 0.1, 0.2 / 0.1, 0.0, math.log(1.2) / 0.2]])
    sampling = RoISampling(rois_per_image=4, fg_fraction=1.0)
    boxes, labels, targets = sample_rois(proposal, gt, torch.tensor([3]), 4, sampling, BoxCoder(stds=STDS))
    row = (boxes == proposal).all(1).nonzero().flatten()
    assert labels[row].item() == 3
    assert torch.allclose(targets[row], expected, atol=1e-6)
    gt_row = (boxes == gt).all(1).nonzero().flatten()  # the ground truth itself is a RoI with zero target
    assert torch.allclose(targets[gt_row], torch.zeros(1, 4), atol=1e-6)


def _random_proposals(count: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(count, 2, generator=generator) * 300
    wh = torch.rand(count, 2, generator=generator) * 150 + 10
    return torch.cat([xy, xy + wh], 1)


def test_sampling_ratios_and_overlap_ranges():
    generator = torch.Generator().manual_seed(0)
    gt = torch.tensor([[50.0, 50.0, 150.0, 150.0], [200.0, 100.0, 320.0, 260.0]])
    near = gt.repeat(100, 1) + torch.randn(200, 4, generator=generator) * 8  # many foreground windows
    proposals = torch.cat([near, _random_proposals(800, generator)])
    sampling = RoISampling()
    boxes, labels, targets = sample_rois(proposals, gt, torch.tensor([1, 2]), 3, sampling, BoxCoder(stds=STDS), generator)
    assert len(boxes) == 64
    assert int((labels > 0).sum()) == 16  # 25% foreground
    iou = box_iou(boxes, gt).max(1).values
    assert bool((iou[labels > 0] >= 0.5).all())
    assert bool(((iou[labels == 0] >= 0.1) & (iou[labels == 0] < 0.5)).all())
    assert bool((targets[labels == 0] == 0).all())
    # Few foreground windows: all of them (the ground truth included), the rest background.
    far = _random_proposals(300, generator)
    far = far[box_iou(far, gt).max(1).values < 0.5]
    boxes, labels, _ = sample_rois(far, gt, torch.tensor([1, 2]), 3, sampling, BoxCoder(stds=STDS), generator)
    assert int((labels > 0).sum()) == 2 and len(boxes) <= 64
    assert bool((labels >= 0).all())


def test_each_rois_own_loss_hand_worked_and_summing_to_the_multi_task_loss():
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [0.0, 0.0, 0.0]])
    deltas = torch.zeros(2, 12)
    deltas[0, 8:12] = torch.tensor([0.5, -2.0, 0.0, 1.0])
    deltas[1, 0:4] = 100.0
    targets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    labels = torch.tensor([2, 0])
    losses = roi_losses(logits, deltas, labels, targets, box_weight=2.0)
    assert losses.tolist() == pytest.approx([-math.log(2 / 4) + 2.0 * (0.125 + 1.5 + 0.0 + 0.5), -math.log(1 / 3)])
    generator = torch.Generator().manual_seed(0)
    logits, deltas = torch.randn(30, 4, generator=generator), torch.randn(30, 16, generator=generator)
    labels, targets = torch.randint(0, 4, (30,), generator=generator), torch.randn(30, 4, generator=generator)
    cls, box = fast_rcnn_loss(logits, deltas, labels, targets, box_weight=1.5)
    assert roi_losses(logits, deltas, labels, targets, 1.5).mean().item() == pytest.approx((cls + box).item(), rel=1e-5)


def test_hard_mining_takes_every_labelled_roi_and_refuses_a_bad_iou():
    generator = torch.Generator().manual_seed(0)
    gt = torch.tensor([[50.0, 50.0, 150.0, 150.0]])
    proposals = torch.cat([gt.repeat(30, 1) + torch.randn(30, 4, generator=generator) * 8,
                           _random_proposals(300, generator)])
    sampling = RoISampling(rois_per_image=8, bg_low=0.0, hard_mining_nms=0.7)
    boxes, labels, targets = sample_rois(proposals, gt, torch.tensor([1]), 2, sampling, BoxCoder(stds=STDS), generator)
    iou = box_iou(torch.cat([gt, proposals]), gt).max(1).values
    assert len(boxes) == int((iou >= 0.0).sum()) == 331 and int((labels > 0).sum()) == int((iou >= 0.5).sum())
    foreground = labels > 0
    expected = BoxCoder(stds=STDS).encode(boxes[foreground], gt.repeat(int(foreground.sum()), 1))
    assert torch.allclose(targets[foreground], expected)
    with pytest.raises(ValueError, match="hard_mining_nms"):
        RoISampling(hard_mining_nms=-0.1)


def _tiny_fast_rcnn(frozen: int = 1, levels=(6,), scales=(96,)) -> FastRCNN:
    torch.manual_seed(0)
    classifier = SPPClassifier(build_backbone("zf5", 0.125), 3, levels=levels, hidden=32, dropout=0.0)
    head = FastRCNNHead(classifier.fc6, classifier.fc7, 3)
    model = FastRCNN(classifier.trunk, head, levels, scales=scales, max_side=None, window_target=48.0,
                     sampling=RoISampling(rois_per_image=16))
    freeze_first_convs(model.trunk, frozen)
    return model


def _image_and_targets():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(3, 90, 120, generator=generator)
    gt = torch.tensor([[10.0, 10.0, 60.0, 70.0]])
    proposals = torch.cat([gt + torch.randn(20, 4, generator=generator) * 4, _random_proposals(40, generator) * 0.3])
    return image, proposals, {"boxes": gt, "labels": torch.tensor([2])}


def test_gradient_reaches_conv_layers_in_fast_rcnn_except_the_frozen_first():
    model = _tiny_fast_rcnn(frozen=1).train()
    image, proposals, target = _image_and_targets()
    losses = model([image, image.flip(-1)], [proposals, proposals], [target, target])
    (losses["loss_classifier"] + losses["loss_box_reg"]).backward()
    convs = [m for m in model.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].weight.grad is None and not convs[0].weight.requires_grad
    for conv in convs[1:]:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert model.head.bbox_pred.weight.grad.abs().sum() > 0


def test_eval_follows_the_detection_contract():
    model = _tiny_fast_rcnn(levels=(6, 3, 2, 1), scales=(64, 128)).eval()
    image, proposals, _ = _image_and_targets()
    outputs = model([image, image[:, :50, :70]], [proposals, proposals[:5]])
    assert len(outputs) == 2
    for output, (height, width) in zip(outputs, [(90, 120), (50, 70)]):
        assert set(output) == {"boxes", "labels", "scores"}
        boxes = output["boxes"]
        assert bool(((boxes[:, 0] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)).all())
        assert bool(((output["labels"] >= 1) & (output["labels"] <= 2)).all())
        assert bool(((output["scores"] >= 0) & (output["scores"] <= 1)).all())
    empty = model([image], [torch.zeros(0, 4)])[0]
    assert empty["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="targets"):
        model.train()([image], [proposals])
    with pytest.raises(ValueError, match="3, H, W"):
        model.eval()([image[0]], [proposals])


def test_scoring_pools_rois_in_blocks_with_the_values_of_the_whole_pooled_matrix():
    # score() pools RoIs and multiplies them by fc6 in blocks (pooled_fc6);
    # the reference pools every RoI at its scale at once, then runs the head.
    from sppnet.models.windows import choose_scales

    model = _tiny_fast_rcnn(levels=(6, 3, 2, 1), scales=(64, 128, 192)).eval()
    image, _, _ = _image_and_targets()
    proposals = _random_proposals(600, torch.Generator().manual_seed(3)) * 0.3
    proposals = proposals[(proposals[:, 2] > proposals[:, 0]) & (proposals[:, 3] > proposals[:, 1])]
    model.fc6_block = 100  # several blocks
    probabilities, per_class = model.score(image, proposals)
    with torch.no_grad():
        maps = [model.feature_maps([image], [scale]) for scale in model.scales]
        choice = choose_scales(proposals, [factor[0] for _, factor in maps], model.window_target)
        assert len(choice.unique()) == 3, "the RoIs must be spread over every scale"
        pooled = torch.zeros(len(proposals), model.head.fc6[0].in_features)
        for index, (features, factor) in enumerate(maps):
            chosen = (choice == index).nonzero().flatten()
            pooled[chosen] = model.pool(features, [proposals[chosen] * factor[0]])
        expected = F.softmax(model.head.cls_score(model.head.features(pooled)), dim=1)
    torch.testing.assert_close(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert per_class.shape == (len(proposals), 3, 4)


def test_bf16_fast_path_is_close_to_fp32_and_reversible():
    model = _tiny_fast_rcnn().eval()
    image, proposals, _ = _image_and_targets()
    exact, exact_boxes = model.score(image, proposals)
    model.set_precision("bf16")
    assert model.trunk.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    fast, fast_boxes = model.score(image, proposals)
    assert fast.dtype == torch.float32 and fast_boxes.dtype == torch.float32
    assert (fast - exact).abs().max() < 0.02
    assert (fast_boxes - exact_boxes).abs().max() < 2.0
    model.set_precision("fp32")
    again, _ = model.score(image, proposals)
    assert torch.equal(again, exact)
    with pytest.raises(ValueError, match="precision"):
        model.set_precision("fp16")


def test_flip_testing_averages_each_rois_outputs_over_the_image_and_its_mirror():
    model = _tiny_fast_rcnn(levels=(6, 3, 2, 1), scales=(64, 128)).eval()
    image, proposals, _ = _image_and_targets()
    width = image.shape[-1]
    probabilities, per_class = model.score(image, proposals)
    seen_probabilities, seen_boxes = model.score(image.flip(-1), mirror_boxes(proposals, width))
    assert not torch.allclose(probabilities, seen_probabilities), "the mirror must be another view"
    model.flip = True
    both_probabilities, both_boxes = model.score(image, proposals)
    torch.testing.assert_close(both_probabilities, (probabilities + seen_probabilities) / 2)
    seen_back = mirror_boxes(seen_boxes.reshape(-1, 4), width).reshape(seen_boxes.shape)
    torch.testing.assert_close(both_boxes, (per_class + seen_back) / 2)
    # So the detector is mirror-symmetric: the mirrored image's detections are the mirrored detections.
    integer = proposals.round()
    out = model([image], [integer])[0]
    mirrored = model([image.flip(-1)], [mirror_boxes(integer, width)])[0]
    assert_mirror_symmetric(out, mirrored, width, atol=1e-4)


def test_head_fc_loaded_into_a_pyramid_classifier_computes_the_heads_fc7_on_its_levels():
    torch.manual_seed(0)
    channels = build_backbone("zf5", 0.125).out_channels
    classifier = SPPClassifier(build_backbone("zf5", 0.125), 3, levels=(6, 3, 2, 1), hidden=32, dropout=0.0).eval()
    fc6 = nn.Sequential(nn.Linear(channels * 9, 32), nn.ReLU(), nn.Dropout(0.0))
    fc7 = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.0))
    head = FastRCNNHead(fc6, fc7, 4).eval()
    load_head_fc(classifier, head, (3,))
    pyramid = torch.randn(5, channels * (36 + 9 + 4 + 1))
    level_3 = pyramid[:, channels * 36:channels * 45]  # the SPP output is level-major: 6, 3, 2, 1
    assert torch.allclose(classifier.fc7(classifier.fc6(pyramid)), head.features(level_3), atol=1e-6)
    zeroed = torch.cat([classifier.fc6[0].weight[:, :channels * 36], classifier.fc6[0].weight[:, channels * 45:]], 1)
    assert torch.count_nonzero(zeroed) == 0
    with pytest.raises(ValueError, match=r"levels \(7,\)"):
        load_head_fc(classifier, FastRCNNHead(nn.Sequential(nn.Linear(channels * 49, 32)), fc7, 4), (7,))


def test_hard_mining_trains_the_head_on_each_images_highest_loss_rois_left_by_nms():
    """The RoIs the head trains on are, per image, the highest-loss ones
    (head in eval mode) that survive NMS over the losses, worked out here
    one RoI at a time with a greedy NMS loop."""
    model = _tiny_fast_rcnn().train()
    model.sampling = RoISampling(rois_per_image=5, bg_low=0.0, hard_mining_nms=0.5)
    image, proposals, target = _image_and_targets()
    seen = []
    model.head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    generator = torch.Generator().manual_seed(0)
    model.losses([image], [proposals], [target], generator=generator)
    assert len(seen) == 1 and len(seen[0]) == 5

    # The reference: the same RoIs and pooled inputs, each RoI's loss on its own.
    features, factors = model.feature_maps([image], [model.train_scales[0]])
    boxes, labels, targets = sample_rois(proposals, target["boxes"], target["labels"], 3, model.sampling, model.box_coder)
    pooled = model.pool(features, [boxes * factors[0]]).detach()
    model.head.eval()
    with torch.no_grad():
        losses = []
        for i in range(len(boxes)):
            hidden = model.head.features(pooled[i:i + 1])
            logits, deltas = model.head.cls_score(hidden), model.head.bbox_pred(hidden)
            loss = F.cross_entropy(logits, labels[i:i + 1])
            if labels[i] > 0:
                own = deltas[0, 4 * labels[i]: 4 * labels[i] + 4]
                loss = loss + smooth_l1(own - targets[i]).sum()
            losses.append(float(loss))
    order = sorted(range(len(losses)), key=lambda i: -losses[i])
    kept = []
    for i in order:
        if all(float(box_iou(boxes[i:i + 1], boxes[j:j + 1])) <= 0.5 for j in kept):
            kept.append(i)
    assert torch.allclose(seen[0], pooled[kept[:5]], atol=1e-6)


def test_training_counts_the_rois_the_head_names_objects():
    """The training losses' fourth output: how many of the RoIs trained on the
    head names an object (highest score not background). A head biased to
    background names none (the collapse the training log warns of), one biased
    to a class names all."""
    from sppnet.engine.fast_rcnn_training import _SummedLosses

    model = _tiny_fast_rcnn().train()
    image, proposals, target = _image_and_targets()
    inputs = ([image, image.flip(-1)], [proposals, mirror_boxes(proposals, 120.0)], [target, {
        "boxes": mirror_boxes(target["boxes"], 120.0), "labels": target["labels"]}],
        [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)], [0, 1])
    with torch.no_grad():
        model.head.cls_score.weight.zero_()
        model.head.cls_score.bias.copy_(torch.tensor([100.0, 0.0, 0.0]))
    _, _, count, named = _SummedLosses(model)(*inputs)
    assert count > 0 and named == 0
    with torch.no_grad():
        model.head.cls_score.bias.copy_(torch.tensor([0.0, 0.0, 100.0]))
    _, _, again, named = _SummedLosses(model)(*inputs)
    assert named == again == count


def test_a_collapsed_head_is_warned_of_from_the_last_iterations_only():
    from sppnet.engine.fast_rcnn_training import collapse_warning

    assert collapse_warning([0.0] * 99) is None  # too short a run to tell
    warning = collapse_warning([0.0] * 200)
    assert "0.00% of the training RoIs" in warning and "last 200 iterations" in warning
    assert "train.warmup_iterations" in warning
    assert collapse_warning([0.3] * 100 + [0.0] * 500) is not None  # only the last 500 count
    assert collapse_warning([0.0] * 100 + [0.02] * 500) is None
    assert collapse_warning([0.0] * 499 + [6.0]) is None  # a mean of 1.2%
