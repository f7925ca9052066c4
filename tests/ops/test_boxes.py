"""Tests for sppnet.ops.boxes against hand-worked values and torchvision."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from sppnet.ops import boxes as B
from sppnet.ops.boxes import BoxCoder, check_boxes, clip_boxes, mirror_boxes

FAST_RCNN_STDS = (0.1, 0.1, 0.2, 0.2)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def t(rows, dtype=torch.float64, device="cpu"):
    return torch.tensor(rows, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- encode


@pytest.mark.parametrize("device", DEVICES)
def test_encode_hand_worked(device):
    # proposal (0,0,10,20): w=10, h=20, centre (5,10)
    # gt (5,5,15,25):       w=10, h=20, centre (10,15)
    # dx = 5/10 = 0.5, dy = 5/20 = 0.25, dw = log 1 = 0, dh = 0
    p, g = t([[0, 0, 10, 20]], device=device), t([[5, 5, 15, 25]], device=device)
    d = BoxCoder().encode(p, g)
    assert d.shape == (1, 4) and d.dtype == torch.float64 and d.device.type == device
    torch.testing.assert_close(d.cpu(), t([[0.5, 0.25, 0.0, 0.0]]))
    d = BoxCoder(stds=FAST_RCNN_STDS).encode(p, g)
    torch.testing.assert_close(d.cpu(), t([[5.0, 2.5, 0.0, 0.0]]))


def test_encode_hand_worked_scale_and_means():
    # proposal (10,10,30,20): w=20, h=10, centre (20,15)
    # gt (0,5,40,45): w=40, h=40, centre (20,25)
    # dx = 0, dy = 10/10 = 1, dw = log 2, dh = log 4
    p, g = t([[10, 10, 30, 20]]), t([[0, 5, 40, 45]])
    d = BoxCoder().encode(p, g)
    torch.testing.assert_close(d, t([[0.0, 1.0, math.log(2), math.log(4)]]))
    coder = BoxCoder(means=(0.0, 0.5, 0.1, 0.2), stds=(0.1, 0.1, 0.2, 0.2))
    expected = [(0.0 - 0.0) / 0.1, (1.0 - 0.5) / 0.1, (math.log(2) - 0.1) / 0.2, (math.log(4) - 0.2) / 0.2]
    torch.testing.assert_close(coder.encode(p, g), t([expected]))


def test_encode_float32_in_float32_out():
    d = BoxCoder().encode(t([[0, 0, 10, 20]], torch.float32), t([[5, 5, 15, 25]], torch.float32))
    assert d.dtype == torch.float32


def _hand_reference(proposals, gts, stds):
    """Direct per-row computation, independent of BoxCoder."""
    rows = []
    for (px1, py1, px2, py2), (gx1, gy1, gx2, gy2) in zip(proposals.tolist(), gts.tolist()):
        pw, ph, gw, gh = px2 - px1, py2 - py1, gx2 - gx1, gy2 - gy1
        pcx, pcy, gcx, gcy = px1 + pw / 2, py1 + ph / 2, gx1 + gw / 2, gy1 + gh / 2
        d = ((gcx - pcx) / pw, (gcy - pcy) / ph, math.log(gw / pw), math.log(gh / ph))
        rows.append([v / s for v, s in zip(d, stds)])
    return t(rows)


def test_encode_matches_torchvision_and_hand():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 300
    wh = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100 + 1
    proposals = torch.cat([xy, xy + wh], 1)
    xy2 = xy + torch.randn(50, 2, generator=g, dtype=torch.float64) * 10
    wh2 = wh * (torch.rand(50, 2, generator=g, dtype=torch.float64) + 0.5)
    gts = torch.cat([xy2, xy2 + wh2], 1)

    ours = BoxCoder(stds=FAST_RCNN_STDS).encode(proposals, gts)
    tv = TVBoxCoder(weights=tuple(1 / s for s in FAST_RCNN_STDS))
    # torchvision: encode_single(reference_boxes=ground truth, proposals)
    torch.testing.assert_close(ours, tv.encode_single(gts, proposals))
    torch.testing.assert_close(ours, _hand_reference(proposals, gts, FAST_RCNN_STDS))


# ----------------------------------------------------------------------------- decode


def test_decode_hand_worked():
    # inverse of test_encode_hand_worked_scale_and_means
    out = BoxCoder().decode(t([[0.0, 1.0, math.log(2), math.log(4)]]), t([[10, 10, 30, 20]]))
    torch.testing.assert_close(out, t([[0, 5, 40, 45]]))
    out = BoxCoder(stds=FAST_RCNN_STDS).decode(t([[5.0, 2.5, 0.0, 0.0]]), t([[0, 0, 10, 20]]))
    torch.testing.assert_close(out, t([[5, 5, 15, 25]]))


def test_decode_matches_torchvision_per_class():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(20, 2, generator=g, dtype=torch.float64) * 300
    wh = torch.rand(20, 2, generator=g, dtype=torch.float64) * 100 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    deltas = torch.randn(20, 4 * 3, generator=g, dtype=torch.float64)
    ours = BoxCoder(stds=FAST_RCNN_STDS).decode(deltas, boxes)
    tv = TVBoxCoder(weights=tuple(1 / s for s in FAST_RCNN_STDS)).decode_single(deltas, boxes)
    assert ours.shape == (20, 12)
    torch.testing.assert_close(ours, tv)
    # each class block decodes as if alone
    for k in range(3):
        alone = BoxCoder(stds=FAST_RCNN_STDS).decode(deltas[:, 4 * k : 4 * k + 4], boxes)
        torch.testing.assert_close(ours[:, 4 * k : 4 * k + 4], alone)


def test_decode_per_class_hand_worked():
    boxes = t([[0, 0, 10, 20]])
    deltas = t([[0.0, 0.0, 0.0, 0.0, 0.5, 0.25, 0.0, 0.0]])
    out = BoxCoder().decode(deltas, boxes)
    torch.testing.assert_close(out, t([[0, 0, 10, 20, 5, 5, 15, 25]]))


def test_decode_clamps_large_log_scale():
    clip = math.log(1000 / 16)
    boxes = t([[0, 0, 10, 10]])
    out = BoxCoder().decode(t([[0.0, 0.0, 50.0, 1e6]]), boxes)
    assert torch.isfinite(out).all()
    w, h = 10 * math.exp(clip), 10 * math.exp(clip)  # 625 each
    torch.testing.assert_close(out, t([[5 - w / 2, 5 - h / 2, 5 + w / 2, 5 + h / 2]]))
    # custom clip, applied after un-normalising by std
    coder = BoxCoder(stds=FAST_RCNN_STDS, clip_log_scale=math.log(2))
    out = coder.decode(t([[0.0, 0.0, 100.0, 0.0]]), boxes)
    torch.testing.assert_close(out, t([[-5, 0, 15, 10]]))


def test_decode_casts_boxes_to_delta_dtype():
    out = BoxCoder().decode(t([[0.5, 0.25, 0, 0]], torch.float32), t([[0, 0, 10, 20]], torch.float64))
    assert out.dtype == torch.float32


_coord = st.floats(-500, 500, allow_nan=False, allow_infinity=False)
_size = st.floats(1.0, 50.0, allow_nan=False, allow_infinity=False)
_box = st.tuples(_coord, _coord, _size, _size).map(lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(_box, _box), min_size=1, max_size=8),
    use_stds=st.booleans(),
)
def test_round_trip(pairs, use_stds):
    proposals = t([p for p, _ in pairs])
    gts = t([g for _, g in pairs])
    coder = BoxCoder(means=(0.01, -0.02, 0.03, 0.0), stds=FAST_RCNN_STDS) if use_stds else BoxCoder()
    deltas = coder.encode(proposals, gts)
    torch.testing.assert_close(coder.decode(deltas, proposals), gts, atol=1e-6, rtol=0)
    again = coder.encode(proposals, coder.decode(deltas, proposals))
    torch.testing.assert_close(again, deltas, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- empty


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device):
    e = torch.empty(0, 4, device=device)
    coder = BoxCoder(stds=FAST_RCNN_STDS)
    assert coder.encode(e, e).shape == (0, 4)
    out = coder.decode(e, e)
    assert out.shape == (0, 4) and out.device.type == device
    assert coder.decode(torch.empty(0, 12, device=device), e).shape == (0, 12)
    assert check_boxes(e) is e
    assert clip_boxes(e, (10, 20)).shape == (0, 4)


# ----------------------------------------------------------------------------- validation


def test_check_boxes_returns_input():
    b = t([[0, 0, 1, 1], [2, 2, 2, 3]])
    assert check_boxes(b) is b


@pytest.mark.parametrize(
    ("value", "exc", "words"),
    [
        ([[0, 0, 1, 1]], TypeError, "torch.Tensor"),
        (torch.tensor([[0, 0, 1, 1]]), TypeError, "floating point"),
        (torch.zeros(3, 5), ValueError, "shape (N, 4)"),
        (torch.zeros(4), ValueError, "shape (N, 4)"),
        (torch.tensor([[0.0, 0, 1, 1], [0, float("nan"), 1, 1]]), ValueError, "row 1 has a NaN or infinite"),
        (torch.tensor([[0.0, 0, float("inf"), 1]]), ValueError, "row 0 has a NaN or infinite"),
        (torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [5.0, 0, 4, 1]]), ValueError, "row 2 has x2 < x1"),
        (torch.tensor([[0.0, 3, 1, 2]]), ValueError, "y2 < y1"),
    ],
)
def test_check_boxes_errors(value, exc, words):
    with pytest.raises(exc, match="my_boxes") as info:
        check_boxes(value, "my_boxes")
    assert words in str(info.value)


def test_encode_rejects_degenerate_proposals():
    p = t([[0, 0, 10, 10], [3, 3, 3, 8]])
    with pytest.raises(ValueError, match=r"proposals row 1 has zero width or height"):
        BoxCoder().encode(p, t([[0, 0, 1, 1], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match=r"targets row 0 has zero width or height"):
        BoxCoder().encode(t([[0, 0, 1, 1]]), t([[0, 0, 1, 0]]))
    with pytest.raises(ValueError, match=r"proposals row 0 has x2 < x1"):
        BoxCoder().encode(t([[2, 0, 1, 1]]), t([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="same number of rows"):
        BoxCoder().encode(t([[0, 0, 1, 1]]), t([[0, 0, 1, 1], [0, 0, 1, 1]]))


def test_decode_rejects_bad_shapes():
    coder = BoxCoder()
    with pytest.raises(ValueError, match=r"deltas must have shape \(N, 4 \* K\)"):
        coder.decode(torch.zeros(2, 6), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same number of rows"):
        coder.decode(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        coder.decode(torch.zeros(2, 4), torch.zeros(2, 8))
    with pytest.raises(TypeError, match="floating point"):
        coder.decode(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4))


def test_box_coder_config_validation():
    with pytest.raises(ValueError, match="stds must all be > 0"):
        BoxCoder(stds=(0.1, 0.1, 0.0, 0.2))
    with pytest.raises(ValueError, match="means must be 4"):
        BoxCoder(means=(0.0, 0.0))
    coder = BoxCoder(stds=[0.1, 0.1, 0.2, 0.2])
    assert coder.stds == FAST_RCNN_STDS
    with pytest.raises(AttributeError):
        coder.stds = (1.0, 1.0, 1.0, 1.0)  # frozen


# ----------------------------------------------------------------------------- clip / torchvision wrappers


def test_clip_boxes_height_width_order():
    b = t([[-5, -5, 50, 50], [10, 10, 20, 20]])
    out = clip_boxes(b, (30, 40))  # height 30, width 40
    torch.testing.assert_close(out, t([[0, 0, 40, 30], [10, 10, 20, 20]]))
    per_class = clip_boxes(torch.cat([b, b], 1), (30, 40))
    torch.testing.assert_close(per_class, torch.cat([out, out], 1))
    with pytest.raises(ValueError, match="image_size"):
        clip_boxes(b, (30,))
    with pytest.raises(ValueError, match="image_size"):
        clip_boxes(b, (0, 40))


def test_torchvision_ops_give_torchvisions_results():
    ops = torchvision.ops
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(40, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 30 + 0.5], 1)
    scores, classes = torch.rand(40, generator=g), torch.randint(0, 3, (40,), generator=g)
    assert torch.equal(B.box_iou(boxes, boxes[:7]), ops.box_iou(boxes, boxes[:7]))
    assert torch.equal(B.box_area(boxes), ops.box_area(boxes))
    assert torch.equal(B.nms(boxes, scores, 0.3), ops.nms(boxes, scores, 0.3))
    assert torch.equal(B.batched_nms(boxes, scores, classes, 0.3), ops.batched_nms(boxes, scores, classes, 0.3))
    assert torch.equal(B.clip_boxes_to_image(boxes, (40, 60)), ops.clip_boxes_to_image(boxes, (40, 60)))
    assert torch.equal(B.remove_small_boxes(boxes, 12.0), ops.remove_small_boxes(boxes, 12.0))
    for name in ("box_iou", "nms", "batched_nms", "clip_boxes_to_image", "remove_small_boxes", "box_area",
                 "BoxCoder", "check_boxes", "clip_boxes"):
        assert name in B.__all__


def test_commands_that_need_no_torchvision_do_not_import_it():
    # Its import takes ~2 s (torch._dynamo), a third of a command's start.
    import subprocess
    import sys

    code = ("import sys, sppnet, sppnet.cli, sppnet.engine.classification, sppnet.evaluation.classification, "
            "sppnet.data.synthetic; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert result.stdout.strip() == "[]", result.stdout


def test_iou_nms_match_torchvision_and_hand():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]])
    iou = B.box_iou(a, a)
    torch.testing.assert_close(iou, torchvision.ops.box_iou(a, a))
    # overlap 5x5=25, union 100+100-25=175 (width = x2 - x1, no +1)
    assert iou[0, 1].item() == pytest.approx(25 / 175)
    torch.testing.assert_close(B.box_area(a), torch.tensor([100.0, 100.0, 100.0]))
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert B.nms(a, scores, 0.1).tolist() == [0, 2]
    assert B.nms(a, scores, 0.2).tolist() == [0, 1, 2]
    idx = torch.tensor([0, 1, 0])
    expected = torchvision.ops.batched_nms(a, scores, idx, 0.1)
    torch.testing.assert_close(B.batched_nms(a, scores, idx, 0.1), expected)
    assert B.remove_small_boxes(t([[0, 0, 1, 5], [0, 0, 5, 5]]), 2.0).tolist() == [1]


def test_mirror_boxes_hand_worked_and_an_involution():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 100.0, 5.0]])
    mirrored = mirror_boxes(boxes, 100)
    assert mirrored.tolist() == [[70.0, 20.0, 90.0, 60.0], [0.0, 0.0, 100.0, 5.0]]
    assert torch.equal(mirror_boxes(mirrored, 100), boxes)
    # A pixel-exact check: the box's pixels in the flipped image are the mirrored box's.
    image = torch.zeros(1, 8, 100)
    image[0, 2:6, 10:30] = 1
    flipped = image.flip(-1)
    x0, y0, x1, y1 = mirror_boxes(torch.tensor([[10.0, 2.0, 30.0, 6.0]]), 100)[0].int().tolist()
    assert flipped[0, y0:y1, x0:x1].all() and flipped.sum() == image.sum() == (y1 - y0) * (x1 - x0)


# ----------------------------------------------------------------------------- soft-NMS and fusion
def _slow_soft_nms(boxes, scores, sigma, top_k):
    """Gaussian soft-NMS of one class, one window at a time (Bodla et al.'s algorithm 1)."""
    remaining = {i: float(s) for i, s in enumerate(scores)}
    kept = []
    while remaining and len(kept) < top_k:
        best = max(remaining, key=lambda i: (remaining[i], -i))
        kept.append((best, remaining.pop(best)))
        for i in remaining:
            overlap = float(torchvision.ops.box_iou(boxes[best][None], boxes[i][None]))
            remaining[i] *= math.exp(-overlap * overlap / sigma)
    return kept


def test_soft_nms_hand_worked_and_against_a_slow_loop():
    boxes = t([[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]], torch.float32)
    window, labels, kept_boxes, scores = B.class_nms(boxes, t([[0.9], [0.8], [0.5]], torch.float32), 0.3, 10,
                                                     soft_sigma=0.5)
    # IoU of the first two is 0.5: 0.8 x exp(-0.25 / 0.5) = 0.485, now below the third's 0.5.
    assert window.tolist() == [0, 2, 1] and labels.tolist() == [1, 1, 1]
    assert torch.allclose(scores, t([0.9, 0.5, 0.8 * math.exp(-0.5)], torch.float32))
    assert torch.equal(kept_boxes, boxes[[0, 2, 1]])
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=generator) * 50
    per_class = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=generator) * 30], 1)[:, None].repeat(1, 2, 1)
    per_class[:, 1] += 3.0  # class 2's boxes are other boxes
    class_scores = torch.rand(60, 2, generator=generator)
    window, labels, kept_boxes, scores = B.class_nms(per_class, class_scores, 0.3, 15, soft_sigma=0.3)
    for label in (1, 2):
        expected = _slow_soft_nms(per_class[:, label - 1], class_scores[:, label - 1], 0.3, 15)
        mine = labels == label
        assert window[mine].tolist() == [i for i, _ in expected]
        assert torch.allclose(scores[mine], torch.tensor([s for _, s in expected]), atol=1e-6)
        assert torch.equal(kept_boxes[mine], per_class[window[mine], label - 1])
    with pytest.raises(ValueError, match="soft_sigma"):
        B.class_nms(per_class, class_scores, 0.3, 15, soft_sigma=0.0)


def test_fuse_detections_hand_worked():
    boxes = [t([[0, 0, 10, 10], [0, 0, 10, 4]], torch.float32), t([[1, 1, 11, 11], [50, 50, 60, 60]], torch.float32)]
    scores = [t([0.9, 0.4], torch.float32), t([0.7, 0.6], torch.float32)]
    labels = [torch.tensor([1, 1]), torch.tensor([1, 2])]
    fused_boxes, fused_labels, fused_scores = B.fuse_detections(boxes, scores, labels)
    # Both models found the first object (IoU 81 / 119 = 0.68): the mean box, (0.9 + 0.7) / 2. The
    # second box of model 1 overlaps the first cluster at 0.4 < 0.55: alone, half its score; so is
    # model 2's class-2 box (no class-2 detection of model 1).
    assert fused_labels.tolist() == [1, 2, 1]
    assert torch.allclose(fused_scores, t([0.8, 0.3, 0.2], torch.float32))
    assert torch.allclose(fused_boxes, t([[0.5, 0.5, 10.5, 10.5], [50, 50, 60, 60], [0, 0, 10, 4]], torch.float32))
    # A model's own detections never fuse with each other, however much they overlap.
    same = [t([[0, 0, 10, 10], [0, 0, 10, 9]], torch.float32), torch.zeros(0, 4)]
    _, _, kept = B.fuse_detections(same, [t([0.9, 0.8], torch.float32), torch.zeros(0)],
                                   [torch.tensor([1, 1]), torch.zeros(0, dtype=torch.long)])
    assert torch.allclose(kept, t([0.45, 0.4], torch.float32))
    empty = B.fuse_detections([torch.zeros(0, 4)] * 2, [torch.zeros(0)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    assert [len(x) for x in empty] == [0, 0, 0]
    with pytest.raises(ValueError, match="scores must be >= 0"):  # SVM margins: 0 is not "not found"
        B.fuse_detections(boxes, [t([0.9, -0.4], torch.float32), scores[1]], labels)


def _slow_fusion(boxes, scores, labels, threshold):
    """Fusion one detection at a time, in plain Python lists."""
    items = sorted(((float(s), m, [float(v) for v in b], int(c)) for m in range(len(boxes))
                    for b, s, c in zip(boxes[m], scores[m], labels[m])), key=lambda item: -item[0])
    clusters = []  # [label, [boxes], summed score, models]
    for score, model, box, label in items:
        best, best_overlap = None, threshold
        for cluster in clusters:
            if cluster[0] != label or model in cluster[3]:
                continue
            mean = torch.tensor(cluster[1]).mean(0)
            overlap = float(torchvision.ops.box_iou(torch.tensor([box]), mean[None]))
            if overlap >= best_overlap and (best is None or overlap > best[1]):
                best, best_overlap = (cluster, overlap), overlap
        if best is None:
            clusters.append([label, [box], score, {model}])
        else:
            best[0][1].append(box)
            best[0][2] += score
            best[0][3].add(model)
    return sorted(((c[2] / len(boxes), c[0], torch.tensor(c[1]).mean(0).tolist()) for c in clusters),
                  key=lambda item: -item[0])


def test_fuse_detections_matches_a_slow_loop_on_random_detections():
    generator = torch.Generator().manual_seed(3)
    boxes, scores, labels = [], [], []
    for count in (30, 25, 20):  # three models
        xy = torch.rand(count, 2, generator=generator) * 60
        boxes.append(torch.cat([xy, xy + 10 + torch.rand(count, 2, generator=generator) * 20], 1))
        scores.append(torch.rand(count, generator=generator))
        labels.append(torch.randint(1, 3, (count,), generator=generator))
    fused_boxes, fused_labels, fused_scores = B.fuse_detections(boxes, scores, labels, 0.5)
    expected = _slow_fusion(boxes, scores, labels, 0.5)
    assert len(fused_scores) == len(expected) and len(expected) < 75  # some detections fused
    assert torch.allclose(fused_scores, torch.tensor([s for s, _, _ in expected]), atol=1e-6)
    assert fused_labels.tolist() == [c for _, c, _ in expected]
    assert torch.allclose(fused_boxes, torch.tensor([b for _, _, b in expected]), atol=1e-4)


def test_vote_boxes_hand_worked():
    kept = t([[0, 0, 10, 10], [50, 50, 60, 60]], torch.float32)
    labels = torch.tensor([1, 2])
    candidates = t([[0, 0, 10, 10], [2, 0, 12, 10], [6, 0, 16, 10], [1, 0, 11, 10], [50, 50, 60, 60]],
                   torch.float32)
    scores = t([[0.6, 0.0], [0.2, 0.0], [0.9, 0.0], [-0.5, 0.0], [0.0, -0.3]], torch.float32)
    voted = B.vote_boxes(kept, labels, candidates, scores, 0.5)
    # Class 1: the kept window itself (0.6) and [2, 0, 12, 10] (IoU 80 / 120, weight 0.2) vote;
    # [6, 0, 16, 10] overlaps at 40 / 160 < 0.5 and [1, 0, 11, 10] scores below 0: x = 0.2 * 2 / 0.8.
    # Class 2: no window with a positive score: the box stays.
    torch.testing.assert_close(voted, t([[0.5, 0, 10.5, 10], [50, 50, 60, 60]], torch.float32))
    assert B.vote_boxes(kept[:0], labels[:0], candidates, scores).shape == (0, 4)
    with pytest.raises(ValueError, match="label 3 is not in 1..2"):
        B.vote_boxes(kept, torch.tensor([1, 3]), candidates, scores)
    with pytest.raises(ValueError, match="candidate_boxes must have shape"):
        B.vote_boxes(kept, labels, candidates[:4], scores)


def test_vote_boxes_matches_a_slow_loop_with_per_class_boxes():
    generator = torch.Generator().manual_seed(5)
    count, classes = 40, 3
    xy = torch.rand(count, classes, 2, generator=generator) * 50
    candidates = torch.cat([xy, xy + 10 + torch.rand(count, classes, 2, generator=generator) * 20], 2)
    scores = torch.rand(count, classes, generator=generator) - 0.2  # some below 0: no vote
    window, labels, kept, _ = B.class_nms(candidates, scores, 0.3, 10)
    voted = B.vote_boxes(kept, labels, candidates, scores, 0.5)
    moved = 0
    for box, label, out in zip(kept, labels.tolist(), voted):
        total, summed = 0.0, torch.zeros(4, dtype=torch.float64)
        for r in range(count):
            other, weight = candidates[r, label - 1], float(scores[r, label - 1])
            if weight > 0 and float(torchvision.ops.box_iou(box[None], other[None])) >= 0.5:
                total += weight
                summed += weight * other.double()
        expected = summed / total if total > 0 else box.double()
        torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=0)
        moved += not torch.equal(out, box)
    assert moved > 5  # the comparison covers boxes that voting moved
