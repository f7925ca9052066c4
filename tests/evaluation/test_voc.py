"""VOC AP against hand-computed values and a slow port of the devkit.

The reference ``devkit_ap`` below follows VOCevaldet.m / VOCap.m literally: it
works on 1-based inclusive integer boxes with the devkit's +1 widths, loops over
detections and ground truths, and compares recall with the 11-point thresholds
as exact fractions. The code under test works on the converted 0-based
continuous boxes (x1 - 1, y1 - 1, x2, y2) with plain IoU.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from sppnet.data.records import BACKGROUND, DetectionDataset, ImageRecord
from sppnet.evaluation import (
    Detections,
    detections_from_outputs,
    evaluate_class,
    evaluate_detections,
    plot_precision_recall,
    voc_ap,
)

CLASSES = (BACKGROUND, "cat", "dog", "bird")


def to_continuous(box_1based):
    """Devkit 1-based inclusive (X1, Y1, X2, Y2) -> 0-based continuous."""
    x1, y1, x2, y2 = box_1based
    return [x1 - 1.0, y1 - 1.0, float(x2), float(y2)]


def record(image_id, boxes_1based=(), labels=(), difficult=None, size=(100, 100)):
    n = len(boxes_1based)
    return ImageRecord(
        image_id=image_id,
        image_path=Path(f"{image_id}.jpg"),
        width=size[1],
        height=size[0],
        boxes=torch.tensor([to_continuous(b) for b in boxes_1based], dtype=torch.float32).reshape(n, 4),
        labels=torch.tensor(list(labels), dtype=torch.int64),
        difficult=torch.tensor(list(difficult) if difficult is not None else [False] * n, dtype=torch.bool),
        truncated=torch.zeros(n, dtype=torch.bool),
    )


def dets(rows):
    """rows: (image id, score, continuous box)."""
    if not rows:
        return Detections.empty()
    ids, scores, boxes = zip(*rows)
    return Detections(list(ids), torch.tensor(scores, dtype=torch.float64), torch.tensor(boxes, dtype=torch.float64))


# ----------------------------------------------------------------------------- hand-computed


def test_voc_ap_by_hand():
    # Ranked: TP, FP, TP with 2 positives -> recall .5 .5 1, precision 1 .5 2/3.
    # 11-point: t = 0 .. 0.5 (6 thresholds) reach precision 1; t = 0.6 .. 1
    #   (5 thresholds) only the last point, 2/3: (6 + 5 * 2/3) / 11 = 28/33.
    # area: envelope 1 on (0, .5], 2/3 on (.5, 1]: .5 * 1 + .5 * 2/3 = 5/6.
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(rec, prec, True) == pytest.approx(28 / 33, abs=1e-15)
    assert voc_ap(rec, prec, False) == pytest.approx(5 / 6, abs=1e-15)
    # Recall exactly 3/10 counts for t = 0.3: t = 0, .1, .2, .3 -> 4/11.
    assert voc_ap(np.array([3 / 10]), np.array([1.0]), True) == pytest.approx(4 / 11, abs=1e-15)
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0
    with pytest.raises(ValueError):
        voc_ap(np.array([0.5]), np.array([1.0, 0.5]), True)
    with pytest.raises(ValueError):
        voc_ap(np.array([math.nan]), np.array([1.0]), False)


def test_evaluate_class_by_hand():
    # Two cats (1-based (1,1,10,10) and (21,21,30,30)); detections: 0.9 on the
    # first (TP), 0.8 far from both (FP), 0.7 on the second (TP).
    recs = [record("a", [(1, 1, 10, 10), (21, 21, 30, 30)], [1, 1])]
    d = dets(
        [
            ("a", 0.7, to_continuous((21, 21, 30, 30))),
            ("a", 0.9, to_continuous((1, 1, 10, 10))),
            ("a", 0.8, to_continuous((50, 50, 60, 60))),
        ]
    )
    r07 = evaluate_class(d, recs, 1, use_07_metric=True)
    r12 = evaluate_class(d, recs, 1, use_07_metric=False)
    assert r07.num_positives == 2 and r07.num_detections == 3
    np.testing.assert_allclose(r07.recall, [0.5, 0.5, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(r07.precision, [1.0, 0.5, 2 / 3], rtol=0, atol=1e-15)
    assert r07.ap == pytest.approx(0.8484848484848485, abs=1e-15)  # 28/33, see above
    assert r12.ap == pytest.approx(0.8333333333333334, abs=1e-15)  # 5/6


def test_difficult_objects_are_ignored():
    # Cat A (normal) and cat D (difficult). Ranked: 0.9 on D (ignored), 0.8 on
    # A (TP), 0.7 nowhere (FP). One positive: tp 0 1 1, fp 0 0 1.
    recs = [record("a", [(1, 1, 10, 10), (41, 41, 60, 60)], [1, 1], difficult=[False, True])]
    d = dets(
        [
            ("a", 0.9, to_continuous((41, 41, 60, 60))),
            ("a", 0.8, to_continuous((1, 1, 10, 10))),
            ("a", 0.7, to_continuous((80, 80, 90, 90))),
        ]
    )
    r = evaluate_class(d, recs, 1, use_07_metric=False)
    assert r.num_positives == 1
    np.testing.assert_array_equal(r.recall, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(r.precision, [0.0, 1.0, 0.5])
    assert r.ap == 1.0
    assert evaluate_class(d, recs, 1, use_07_metric=True).ap == 1.0
    # The same detections with D not difficult: 2 positives, all three count.
    recs[0].difficult = torch.tensor([False, False])
    r = evaluate_class(d, recs, 1, use_07_metric=False)
    assert r.num_positives == 2
    np.testing.assert_array_equal(r.precision, [1.0, 1.0, 2 / 3])


def test_duplicate_is_false_positive_and_iou_half_matches():
    # Gt continuous (0, 0, 10, 10), area 100.
    recs = [record("a", [(1, 1, 10, 10)], [1])]
    # Two hits on the same object: TP then FP.
    r = evaluate_class(dets([("a", 0.9, [0, 0, 10, 10]), ("a", 0.8, [0, 0, 10, 9])]), recs, 1)
    np.testing.assert_array_equal(r.precision, [1.0, 0.5])
    np.testing.assert_array_equal(r.recall, [1.0, 1.0])
    # (0, 0, 10, 5): intersection 50, union 100 -> IoU exactly 0.5 -> a match.
    assert evaluate_class(dets([("a", 0.9, [0, 0, 10, 5])]), recs, 1).ap == 1.0
    # (0, 0, 10, 4.9): IoU 0.49 -> a false positive.
    r = evaluate_class(dets([("a", 0.9, [0, 0, 10, 4.9])]), recs, 1)
    assert r.ap == 0.0 and r.precision.tolist() == [0.0]
    # The same in the devkit's own terms: 1-based (1,1,10,5) vs (1,1,10,10):
    # iw = 10, ih = 5, ua = 100 + 50 - 50 -> 0.5.
    assert evaluate_class(dets([("a", 0.9, to_continuous((1, 1, 10, 5)))]), recs, 1).ap == 1.0


def test_highest_iou_object_decides_even_if_taken():
    # Devkit: a detection takes its highest-IoU object; if that one is already
    # detected it is a false positive even when another object would match.
    recs = [record("a", [(1, 1, 10, 10), (1, 1, 10, 12)], [1, 1])]
    d = dets([("a", 0.9, [0, 0, 10, 10]), ("a", 0.8, [0, 0, 10, 10])])
    r = evaluate_class(d, recs, 1)
    np.testing.assert_array_equal(r.precision, [1.0, 0.5])
    np.testing.assert_array_equal(r.recall, [0.5, 0.5])


def test_no_positives_is_nan_and_left_out_of_map():
    recs = [record("a", [(1, 1, 10, 10), (1, 1, 20, 20)], [1, 2], difficult=[False, True])]
    ds = DetectionDataset(Path("."), "test", CLASSES, recs)
    per_class = {1: dets([("a", 0.9, [0, 0, 10, 10])]), 2: dets([("a", 0.5, [0, 0, 20, 20])])}
    ev = evaluate_detections(per_class, ds, "voc07")
    out = ev.to_json()
    assert out["metric"] == "voc07"
    assert out["ap"]["cat"] == 1.0
    assert math.isnan(out["ap"]["dog"]) and math.isnan(out["ap"]["bird"])
    assert out["map"] == 1.0
    assert list(out["ap"]) == ["cat", "dog", "bird"]
    json.dumps(out)
    table = ev.table()
    assert "cat" in table and "100.00" in table and "n/a" in table and "mAP" in table


def test_unknown_image_and_bad_arguments():
    recs = [record("a", [(1, 1, 10, 10)], [1])]
    with pytest.raises(ValueError, match="zzz"):
        evaluate_class(dets([("zzz", 0.9, [0, 0, 10, 10])]), recs, 1)
    ds = DetectionDataset(Path("."), "test", CLASSES, recs)
    with pytest.raises(ValueError, match="metric"):
        evaluate_detections({}, ds, "voc2099")
    with pytest.raises(ValueError, match="labels"):
        evaluate_detections({0: Detections.empty()}, ds)
    with pytest.raises(ValueError, match="length"):
        Detections(["a"], torch.zeros(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="x2 < x1"):
        Detections(["a"], torch.ones(1), torch.tensor([[5.0, 0, 4, 4]]))
    with pytest.raises(ValueError, match="not finite"):
        Detections(["a"], torch.tensor([math.nan]), torch.tensor([[0.0, 0, 4, 4]]))


def test_detections_from_outputs():
    outputs = [
        {"boxes": torch.tensor([[0.0, 0, 5, 5], [1, 1, 6, 6]]), "labels": torch.tensor([2, 1]),
         "scores": torch.tensor([0.5, 0.7])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)},
        {"boxes": torch.tensor([[2.0, 2, 3, 3]]), "labels": torch.tensor([2]), "scores": torch.tensor([0.1])},
    ]
    per = detections_from_outputs(["x", "y", "z"], outputs, num_classes=4)
    assert sorted(per) == [1, 2, 3]
    assert per[1].image_ids == ("x",) and per[1].scores.tolist() == pytest.approx([0.7])
    assert per[2].image_ids == ("x", "z")
    assert per[2].boxes.tolist() == [[0.0, 0, 5, 5], [2, 2, 3, 3]]
    assert len(per[3]) == 0
    with pytest.raises(ValueError, match="'y'"):
        bad = [outputs[0], {**outputs[2], "labels": torch.tensor([4])}]
        detections_from_outputs(["x", "y"], bad, num_classes=4)


# ----------------------------------------------------------------------------- devkit port


def devkit_ap(gt, detections, use_07):
    """Literal port of VOCevaldet.m + VOCap.m (11-point branch as in the 2007
    devkit) on 1-based inclusive integer boxes with +1 widths.

    gt: {image id: [((X1, Y1, X2, Y2), difficult), ...]} for one class.
    detections: [(image id, score, (X1, Y1, X2, Y2))].
    """
    npos = sum(1 for objs in gt.values() for _, hard in objs if not hard)
    order = sorted(range(len(detections)), key=lambda d: -detections[d][1])  # stable, like MATLAB sort
    detected = {img: [False] * len(objs) for img, objs in gt.items()}
    tp, fp = [], []
    for d in order:
        img, _, bb = detections[d]
        ovmax, jmax = -math.inf, None
        for j, (bbgt, _) in enumerate(gt[img]):
            bi = (max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3]))
            iw = bi[2] - bi[0] + 1
            ih = bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (
                    bbgt[3] - bbgt[1] + 1
                ) - iw * ih
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        t = f = 0
        if ovmax >= 0.5:
            if not gt[img][jmax][1]:
                if not detected[img][jmax]:
                    t = 1
                    detected[img][jmax] = True
                else:
                    f = 1
        else:
            f = 1
        tp.append(t)
        fp.append(f)
    if npos == 0:
        return math.nan
    ctp = cfp = 0
    rec_exact, prec = [], []
    for t, f in zip(tp, fp):
        ctp += t
        cfp += f
        rec_exact.append(Fraction(ctp, npos))
        prec.append(ctp / (ctp + cfp) if ctp + cfp else None)  # MATLAB: NaN, skipped by max
    if use_07:
        ap = 0.0
        for k in range(11):
            ps = [p for r, p in zip(rec_exact, prec) if r >= Fraction(k, 10) and p is not None]
            ap += max(ps) if ps else 0.0
        return ap / 11
    mrec = [0.0] + [r.numerator / r.denominator for r in rec_exact] + [1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        a, b = mpre[i], mpre[i + 1]
        mpre[i] = b if a is None else (a if b is None else max(a, b))  # MATLAB max ignores NaN
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap


def random_problem(seed):
    """Images with 1-based integer gt boxes (some difficult) of 3 classes and
    per-image outputs: jittered copies of gts and random boxes. Small grids
    make exact IoU ties and IoU == 0.5 frequent; some seeds round scores to
    make score ties (stable order)."""
    rng = np.random.default_rng(seed)
    grid = 14 if seed % 2 else 80
    tie_scores = seed % 3 == 0

    def rand_box():
        x1, y1 = (int(v) for v in rng.integers(1, grid, 2))
        w, h = (int(v) for v in rng.integers(1, grid // 2, 2))
        return (x1, y1, x1 + w - 1, y1 + h - 1)

    recs, outputs, ids = [], [], []
    gt = {k: {} for k in (1, 2, 3)}
    raw_dets = {k: [] for k in (1, 2, 3)}
    for i in range(int(rng.integers(3, 7))):
        image_id = f"{seed:03d}_{i:02d}"
        ids.append(image_id)
        n = int(rng.integers(0, 6))
        boxes = [rand_box() for _ in range(n)]
        labels = [int(v) for v in rng.integers(1, 4, n)]
        if seed % 5 == 4:  # class 3 without positives
            labels = [1 if v == 3 else v for v in labels]
        hard = [bool(v) for v in rng.random(n) < 0.25]
        recs.append(record(image_id, boxes, labels, hard))
        for k in (1, 2, 3):
            gt[k][image_id] = [(b, h) for b, l, h in zip(boxes, labels, hard) if l == k]
        out_boxes, out_labels = [], []
        for b, l in zip(boxes, labels):
            for _ in range(int(rng.integers(0, 3))):
                j = rng.integers(-2, 3, 4)
                x1, y1 = b[0] + int(j[0]), b[1] + int(j[1])
                out_boxes.append((x1, y1, max(x1, b[2] + int(j[2])), max(y1, b[3] + int(j[3]))))
                out_labels.append(l if rng.random() < 0.8 else int(rng.integers(1, 4)))
        for _ in range(int(rng.integers(0, 5))):
            out_boxes.append(rand_box())
            out_labels.append(int(rng.integers(1, 4)))
        scores = rng.random(len(out_boxes))
        if tie_scores:
            scores = np.round(scores, 1)
        outputs.append(
            {
                "boxes": torch.tensor([to_continuous(b) for b in out_boxes], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(out_labels, dtype=torch.int64),
                "scores": torch.tensor(scores, dtype=torch.float32),
            }
        )
        for b, l, s in zip(out_boxes, out_labels, torch.tensor(scores, dtype=torch.float32).tolist()):
            raw_dets[l].append((image_id, s, b))
    return recs, ids, outputs, gt, raw_dets


@pytest.mark.parametrize("metric", ["voc07", "voc12"])
@pytest.mark.parametrize("seed", range(24))
def test_agrees_with_devkit_port(seed, metric):
    recs, ids, outputs, gt, raw_dets = random_problem(seed)
    ds = DetectionDataset(Path("."), "test", CLASSES, recs)
    per_class = detections_from_outputs(ids, outputs, ds.num_classes)
    ev = evaluate_detections(per_class, ds, metric)
    expected = {}
    for k in (1, 2, 3):
        expected[CLASSES[k]] = devkit_ap(gt[k], raw_dets[k], metric == "voc07")
    got = ev.to_json()["ap"]
    assert list(got) == list(expected)
    for name in expected:
        if math.isnan(expected[name]):
            assert math.isnan(got[name]), name
        else:
            assert abs(got[name] - expected[name]) <= 1e-12, (name, got[name], expected[name])
    finite = [v for v in expected.values() if not math.isnan(v)]
    if finite:
        assert abs(ev.map - sum(finite) / len(finite)) <= 1e-12
    else:
        assert math.isnan(ev.map)


def test_random_problems_cover_the_interesting_cases():
    """The random problems above exercise ties, difficult hits, duplicates and
    IoU exactly 0.5 (so the agreement test is not vacuous)."""
    seen = {"iou_half": 0, "difficult_hit": 0, "nan_class": 0}
    for seed in range(24):
        recs, ids, outputs, gt, raw_dets = random_problem(seed)
        for k in (1, 2, 3):
            if not any(not h for objs in gt[k].values() for _, h in objs):
                seen["nan_class"] += 1
            for img, _, bb in raw_dets[k]:
                for bbgt, hard in gt[k][img]:
                    iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
                    ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
                    if iw > 0 and ih > 0:
                        ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (
                            bbgt[3] - bbgt[1] + 1
                        ) - iw * ih
                        seen["iou_half"] += Fraction(iw * ih, ua) == Fraction(1, 2)
                        seen["difficult_hit"] += hard and iw * ih / ua >= 0.5
    assert all(v > 0 for v in seen.values()), seen


# ----------------------------------------------------------------------------- plot


def test_plot_precision_recall(tmp_path):
    pytest.importorskip("matplotlib")
    recs, ids, outputs, _, _ = random_problem(1)
    ds = DetectionDataset(Path("."), "test", CLASSES, recs)
    ev = evaluate_detections(detections_from_outputs(ids, outputs, ds.num_classes), ds, "voc12")
    path = plot_precision_recall(ev, tmp_path / "plots" / "pr.png")
    assert path == tmp_path / "plots" / "pr.png"
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
