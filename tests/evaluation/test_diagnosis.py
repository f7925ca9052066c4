"""Hoiem et al.'s error analysis on hand-built cases whose every error is known.

Boxes below are the package's 0-based continuous xyxy; IoU = intersection /
union of plain areas (width = x2 - x1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.data.records import BACKGROUND, DetectionDataset, ImageRecord
from sppnet.evaluation import Detections, evaluate_class
from sppnet.evaluation.diagnosis import (
    FP_TYPES,
    SIZE_BINS,
    DiagnosisConfig,
    diagnose_detections,
    parse_groups,
    size_bin_indices,
)

CLASSES = (BACKGROUND, "cat", "dog", "bird")
CAT, DOG, BIRD = 1, 2, 3


def record(image_id, objects=(), size=(100, 100)):
    """objects: (label, box, difficult)."""
    n = len(objects)
    return ImageRecord(
        image_id=image_id,
        image_path=Path(f"{image_id}.jpg"),
        width=size[1],
        height=size[0],
        boxes=torch.tensor([list(o[1]) for o in objects], dtype=torch.float32).reshape(n, 4),
        labels=torch.tensor([o[0] for o in objects], dtype=torch.int64),
        difficult=torch.tensor([o[2] for o in objects], dtype=torch.bool),
        truncated=torch.zeros(n, dtype=torch.bool),
    )


def dets(rows):
    """rows: (image id, score, box)."""
    ids, scores, boxes = zip(*rows)
    return Detections(list(ids), torch.tensor(scores, dtype=torch.float64), torch.tensor(boxes, dtype=torch.float64))


# ----------------------------------------------------------------------------- the main case
#
# Image a: cat A (0,0,10,10), dog B (50,50,70,70), bird C (80,0,100,20),
#          a difficult cat D (0,60,20,80).      Image b: cat E (0,0,20,20).
# Cat detections, by score:
#   .9 on A exactly                      -> true positive
#   .8 (0,0,10,11): IoU 100/110 with A   -> duplicate          -> Loc
#   .7 (0,0,6,20): IoU 120/400 = .3 with E -> poor localisation -> Loc
#   .6 on the dog B                      -> Sim (cat,dog grouped), else Oth
#   .5 on the bird C                     -> Oth
#   .4 (30,30,40,40) touching nothing    -> BG
#   .3 on the difficult cat D            -> ignored
#   .2 on E exactly                      -> true positive
# Two positives (A, E). Counted: TP FP FP FP FP FP . TP
#   recall    .5 .5  .5  .5  .5  .5  .5  1
#   precision 1  1/2 1/3 1/4 1/5 1/6 1/6 2/7
# VOC07: t = 0..0.5 reach precision 1 (6 points), t = .6..1 reach 2/7 (5):
#   (6 + 10/7) / 11 = 52/77.   Area AP: .5 * 1 + .5 * 2/7 = 9/14.

A, B, C, D, E = (0, 0, 10, 10), (50, 50, 70, 70), (80, 0, 100, 20), (0, 60, 20, 80), (0, 0, 20, 20)
MAIN_DETECTIONS = [
    ("a", 0.9, A), ("a", 0.8, (0, 0, 10, 11)), ("b", 0.7, (0, 0, 6, 20)), ("a", 0.6, B),
    ("a", 0.5, C), ("a", 0.4, (30, 30, 40, 40)), ("a", 0.3, D), ("b", 0.2, E),
]


def main_dataset():
    images = [
        record("a", [(CAT, A, False), (DOG, B, False), (BIRD, C, False), (CAT, D, True)]),
        record("b", [(CAT, E, False)]),
    ]
    return DetectionDataset(Path("."), "test", CLASSES, images)


def main_detections():
    # Given out of score order: the analysis ranks them itself.
    rows = MAIN_DETECTIONS[::2] + MAIN_DETECTIONS[1::2]
    return {CAT: dets(rows)}


def test_each_false_positive_gets_its_type():
    result = diagnose_detections(main_detections(), main_dataset(), DiagnosisConfig(groups=(("cat", "dog"),)))
    cat = result.per_class[CAT]
    assert (cat.num_positives, cat.num_detections, cat.num_tp, cat.num_fp, cat.num_ignored) == (2, 8, 2, 5, 1)
    assert cat.fp_counts == {"Loc": 2, "Sim": 1, "Oth": 1, "BG": 1}
    assert cat.ap == pytest.approx(52 / 77, abs=1e-12)
    # The curve: one point per false positive (5 < 4 x 2), types in ranked order Loc Loc Sim Oth BG.
    np.testing.assert_array_equal(cat.curve.num_fp, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(
        cat.curve.counts, [[1, 0, 0, 0], [2, 0, 0, 0], [2, 1, 0, 0], [2, 1, 1, 0], [2, 1, 1, 1]])
    np.testing.assert_allclose(cat.curve.recall, [0.5] * 5)
    np.testing.assert_allclose(cat.curve.fractions[2], [2 / 3, 1 / 3, 0, 0])
    # Worst false positives: what they hit, and how much.
    worst = cat.worst
    assert [fp.kind for fp in worst] == ["Loc", "Loc", "Sim", "Oth", "BG"]
    assert [fp.rank for fp in worst] == [1, 2, 3, 4, 5]
    assert [fp.image_id for fp in worst] == ["a", "b", "a", "a", "a"]
    assert [fp.score for fp in worst] == [0.8, 0.7, 0.6, 0.5, 0.4]
    assert worst[0].box == (0.0, 0.0, 10.0, 11.0) and worst[0].object_box == A
    assert worst[0].iou == pytest.approx(100 / 110) and worst[0].object_label == CAT
    assert worst[1].iou == pytest.approx(0.3) and worst[1].object_box == E
    assert (worst[2].object_label, worst[2].iou) == (DOG, 1.0)
    assert (worst[3].object_label, worst[3].iou) == (BIRD, 1.0)
    assert (worst[4].object_label, worst[4].object_box, worst[4].iou) == (None, None, 0.0)
    # Without groups the dog confusion is Oth.
    plain = diagnose_detections(main_detections(), main_dataset()).per_class[CAT]
    assert plain.fp_counts == {"Loc": 2, "Sim": 0, "Oth": 2, "BG": 1}
    assert [fp.kind for fp in plain.worst] == ["Loc", "Loc", "Oth", "Oth", "BG"]


def test_ap_metrics_and_the_other_classes():
    result = diagnose_detections(main_detections(), main_dataset(), DiagnosisConfig(metric="voc12"))
    assert result.per_class[CAT].ap == pytest.approx(9 / 14, abs=1e-12)
    # Dog and bird: one object each, no detections.
    for label in (DOG, BIRD):
        c = result.per_class[label]
        assert (c.num_positives, c.num_detections, c.ap, len(c.curve), len(c.worst)) == (1, 0, 0.0, 0, 0)
    assert result.map == pytest.approx((9 / 14) / 3, abs=1e-12)
    # The default N of the normalised AP: mean objects per class, (2 + 1 + 1) / 3.
    assert result.normalized_count == pytest.approx(4 / 3)


def test_tables_at_multiples_of_the_object_count():
    result = diagnose_detections(main_detections(), main_dataset(), DiagnosisConfig(groups=(("dog", "cat"),)))
    rows = {row.multiple: row for row in result.per_class[CAT].breakdown}
    assert sorted(rows) == [0.25, 0.5, 1.0, 2.0, 4.0]
    # Cat has 2 objects: top round(.5) -> 1 (at least 1), 1, 2, 4, 8 false positives (only 5 exist).
    table = {m: (r.top, r.considered, r.loc, r.sim, r.oth, r.bg) for m, r in rows.items()}
    assert table == {0.25: (1, 1, 1, 0, 0, 0), 0.5: (1, 1, 1, 0, 0, 0), 1.0: (2, 2, 2, 0, 0, 0),
                     2.0: (4, 4, 2, 1, 1, 0), 4.0: (8, 5, 2, 1, 1, 1)}
    # Recall above the 4th false positive: 1 of 2; with all 5 (fewer than 8) every detection counts: 2 of 2.
    assert (rows[2.0].recall, rows[4.0].recall) == (0.5, 1.0)
    # Pooled: cat's top k plus 1 x ... of dog and bird (1 object each, no false positives);
    # recall over the 4 objects.
    overall = {row.multiple: row for row in result.overall_breakdown}
    assert (overall[1.0].top, overall[1.0].considered, overall[1.0].loc, overall[1.0].recall) == (4, 2, 2, 0.25)
    assert overall[4.0].counts() == {"Loc": 2, "Sim": 1, "Oth": 1, "BG": 1}
    assert (overall[4.0].top, overall[4.0].recall) == (16, 0.5)
    # The pooled curve ends with the five cat false positives.
    assert result.overall_curve.num_fp[-1] == 5 and result.overall_curve.counts[-1].tolist() == [2, 1, 1, 1]
    assert result.fp_counts == {"Loc": 2, "Sim": 1, "Oth": 1, "BG": 1}


def test_curve_stops_at_the_configured_multiple():
    # Cat E alone, 6 background false positives above it: curve to 2 x 1 objects only.
    ds = DetectionDataset(Path("."), "test", CLASSES, [record("b", [(CAT, E, False)])])
    rows = [("b", 1.0 - i / 10, (50 + 5 * i, 50, 54 + 5 * i, 60)) for i in range(6)] + [("b", 0.1, E)]
    config = DiagnosisConfig(max_multiple=2.0, multiples=(1.0, 3.0))
    cat = diagnose_detections({CAT: dets(rows)}, ds, config).per_class[CAT]
    np.testing.assert_array_equal(cat.curve.num_fp, [1, 2])
    np.testing.assert_array_equal(cat.curve.counts[:, FP_TYPES.index("BG")], [1, 2])
    assert [(r.top, r.considered, r.bg, r.recall) for r in cat.breakdown] == [(1, 1, 1, 0.0), (3, 3, 3, 0.0)]


# ----------------------------------------------------------------------------- priorities


def test_type_priorities_and_difficult_objects():
    # Image p: cat (0,0,20,20), dog (20,0,40,20), bird (0,20,20,40).
    # Image q: dog (0,0,20,20), bird (40,0,60,20).   Image r: a difficult cat (0,0,20,20).
    images = [
        record("p", [(CAT, (0, 0, 20, 20), False), (DOG, (20, 0, 40, 20), False), (BIRD, (0, 20, 20, 40), False)]),
        record("q", [(DOG, (0, 0, 20, 20), False), (BIRD, (40, 0, 60, 20), False)]),
        record("r", [(CAT, (0, 0, 20, 20), True)]),
    ]
    ds = DetectionDataset(Path("."), "test", CLASSES, images)
    per_class = {CAT: dets([
        # IoU 200/600 = 1/3 with the cat AND with the dog: Loc comes first.
        ("p", 0.9, (10, 0, 30, 20)),
        # (14,0,54,20): IoU 120/1080 = 1/9 with the dog, 280/920 with the bird.
        ("q", 0.8, (14, 0, 54, 20)),
        # (17,17,37,37): 9/791 with the cat, 51/749 with dog and bird: all < .1 -> BG.
        ("p", 0.7, (17, 17, 37, 37)),
        # IoU 1/3 with a difficult cat: not ignored (< .5), but it is on a cat: Loc.
        ("r", 0.6, (10, 0, 30, 20)),
        # IoU 1 with the difficult cat: ignored.
        ("r", 0.5, (0, 0, 20, 20)),
    ])}
    grouped = diagnose_detections(per_class, ds, DiagnosisConfig(groups=parse_groups("cat, dog"))).per_class[CAT]
    assert [fp.kind for fp in grouped.worst] == ["Loc", "Sim", "BG", "Loc"]
    assert (grouped.num_positives, grouped.num_tp, grouped.num_fp, grouped.num_ignored) == (1, 0, 4, 1)
    loc, sim, bg, difficult = grouped.worst
    assert (loc.object_label, loc.iou) == (CAT, pytest.approx(1 / 3))
    # Sim wins over Oth even though the bird overlaps more.
    assert (sim.object_label, sim.object_box, sim.iou) == (DOG, (0.0, 0.0, 20.0, 20.0), pytest.approx(1 / 9))
    assert (bg.object_label, bg.iou) == (None, pytest.approx(51 / 749))
    assert (difficult.object_label, difficult.image_id, difficult.iou) == (CAT, "r", pytest.approx(1 / 3))
    # Without the group: Oth, explained by the object of highest IoU among the other classes.
    plain = diagnose_detections(per_class, ds).per_class[CAT].worst[1]
    assert (plain.kind, plain.object_label, plain.iou) == ("Oth", BIRD, pytest.approx(280 / 920))


# ----------------------------------------------------------------------------- sizes


def test_size_bin_indices_by_percentile():
    assert size_bin_indices(np.arange(1.0, 11.0)).tolist() == [0, 1, 1, 2, 2, 2, 2, 3, 3, 4]  # 1 2 4 2 1
    assert size_bin_indices([5.0, 1.0, 4.0, 2.0, 3.0]).tolist() == [4, 0, 3, 1, 2]
    assert np.bincount(size_bin_indices(np.arange(11.0)), minlength=5).tolist() == [1, 2, 5, 2, 1]
    assert size_bin_indices([7.0] * 6).tolist() == [2] * 6  # ties share a bin
    assert size_bin_indices([3.0]).tolist() == [2]
    assert size_bin_indices([]).tolist() == []


def size_case():
    # Ten cats of sides 10..19 (areas 100..361, rank i = side - 10) side by side.
    objects = [(CAT, (25 * i, 0, 25 * i + 10 + i, 10 + i), False) for i in range(10)]
    ds = DetectionDataset(Path("."), "test", CLASSES, [record("s", objects, size=(400, 400))])
    hit = lambda i: objects[i][1]  # noqa: E731
    per_class = {CAT: dets([("s", 0.9, hit(0)), ("s", 0.8, hit(9)), ("s", 0.7, (0, 300, 10, 310)),
                            ("s", 0.6, hit(3)), ("s", 0.5, hit(1))])}
    return per_class, ds


def test_ap_per_size_bin_by_hand():
    # Bins by rank: XS {0}, S {1, 2}, M {3..6}, L {7, 8}, XL {9}. Ranked: hit 0, hit 9, FP, hit 3, hit 1.
    # XS: TP first                                   -> AP 1.
    # S (2 objects): ignored, ignored, FP, ignored, TP -> precision 1/2 at recall 1/2:
    #    VOC07 6 points x 1/2 / 11 = 3/11; area .5 x .5 = 1/4.
    # M (4 objects): ., ., FP, TP -> 1/2 at recall 1/4: VOC07 3 points x 1/2 / 11 = 3/22; area 1/8.
    # L: no hit -> 0.   XL: ignored, TP -> 1.
    # All ten: recall .1 .2 .2 .3 .4, precision 1 1 2/3 3/4 4/5:
    #    VOC07 (1 + 1 + 1 + 4/5 + 4/5) / 11 = 23/55.
    per_class, ds = size_case()
    for metric, expected in (("voc07", [1, 3 / 11, 3 / 22, 0, 1]), ("voc12", [1, 1 / 4, 1 / 8, 0, 1])):
        cat = diagnose_detections(per_class, ds, DiagnosisConfig(metric=metric)).per_class[CAT]
        assert [s.bin for s in cat.sizes] == list(SIZE_BINS)
        assert [s.num_positives for s in cat.sizes] == [1, 2, 4, 2, 1]
        np.testing.assert_allclose([s.ap for s in cat.sizes], expected, rtol=0, atol=1e-12)
    assert cat.sizes[1].min_area == 121.0 and cat.sizes[1].max_area == 144.0
    cat = diagnose_detections(per_class, ds).per_class[CAT]
    assert cat.ap == pytest.approx(23 / 55, abs=1e-12)


def test_normalised_ap_by_hand():
    # P_N = R N / (R N + F) with N = 4.
    # S: at its TP R = 1/2, F = 1 -> 2/3; VOC07 6 points x 2/3 / 11 = 4/11.
    # M: R = 1/4, F = 1 -> 1/2 -> 3/22 (as plain AP: N = its 4 objects).
    # All ten: P_N = 1, 1, .8/1.8, 1.2/2.2, 1.6/2.6; VOC07 (3 x 1 + 2 x 8/13) / 11 = 5/13.
    per_class, ds = size_case()
    cat = diagnose_detections(per_class, ds, DiagnosisConfig(normalized_count=4)).per_class[CAT]
    np.testing.assert_allclose([s.normalized_ap for s in cat.sizes], [1, 4 / 11, 3 / 22, 0, 1], rtol=0, atol=1e-12)
    assert cat.normalized_ap == pytest.approx(5 / 13, abs=1e-12)
    # Default N: the mean over classes with objects, here cat alone: 10.
    assert diagnose_detections(per_class, ds).normalized_count == 10


# ----------------------------------------------------------------------------- agreement, errors, JSON


def test_ap_agrees_with_the_voc_evaluator_on_random_data():
    g = np.random.default_rng(0)
    images = []
    for i in range(12):
        objects = []
        for _ in range(int(g.integers(0, 6))):
            x, y = g.uniform(0, 80, 2)
            w, h = g.uniform(4, 40, 2)
            objects.append((int(g.integers(1, 4)), (x, y, x + w, y + h), bool(g.random() < 0.2)))
        images.append(record(f"im{i}", objects))
    ds = DetectionDataset(Path("."), "test", CLASSES, images)
    per_class = {}
    for label in (CAT, DOG, BIRD):
        rows = []
        for _ in range(60):
            rec = images[int(g.integers(0, len(images)))]
            keep = (rec.labels == label).nonzero().flatten().tolist()
            if keep and g.random() < 0.6:  # near an object of the class
                box = rec.boxes[keep[int(g.integers(0, len(keep)))]].double() + torch.from_numpy(g.normal(0, 3, 4))
            else:
                x, y = g.uniform(0, 80, 2)
                box = torch.tensor([x, y, x + g.uniform(4, 40), y + g.uniform(4, 40)])
            box = torch.stack([box[:2].min(box[2:]), box[:2].max(box[2:])]).flatten()
            rows.append((rec.image_id, float(np.round(g.random(), 2)), box.tolist()))  # rounded: ties happen
        per_class[label] = dets(rows)
    for metric, use_07 in (("voc07", True), ("voc12", False)):
        result = diagnose_detections(per_class, ds, DiagnosisConfig(metric=metric))
        for label, c in result.per_class.items():
            assert c.ap == pytest.approx(evaluate_class(per_class[label], images, label, 0.5, use_07).ap, abs=1e-12)
            assert c.num_tp + c.num_fp + c.num_ignored == c.num_detections == 60
            assert sum(c.fp_counts.values()) == c.num_fp


def test_groups_and_config_errors():
    assert parse_groups("cat,dog; car , bus,train") == (("cat", "dog"), ("car", "bus", "train"))
    assert parse_groups("") == () and parse_groups(None) == ()
    with pytest.raises(ValueError, match="empty class name"):
        parse_groups("cat,,dog")
    with pytest.raises(ValueError, match="at least two"):
        parse_groups("cat")
    with pytest.raises(ValueError, match="'horse'"):
        diagnose_detections(main_detections(), main_dataset(), DiagnosisConfig(groups=(("cat", "horse"),)))
    with pytest.raises(ValueError, match="not in the dataset"):
        diagnose_detections({CAT: dets([("zzz", 0.5, A)])}, main_dataset())
    with pytest.raises(ValueError, match="metric"):
        DiagnosisConfig(metric="coco")
    with pytest.raises(ValueError, match="low_iou"):
        DiagnosisConfig(low_iou=0.6)


def test_json_summary_is_plain_json():
    result = diagnose_detections(main_detections(), main_dataset(), DiagnosisConfig(groups=(("cat", "dog"),)))
    summary = json.loads(json.dumps(result.to_json(), allow_nan=False))  # NaN became null
    cat = summary["classes"]["cat"]
    assert cat["fp_counts"] == {"Loc": 2, "Sim": 1, "Oth": 1, "BG": 1}
    assert cat["sizes"]["S"]["ap"] is None  # two cats: XS and XL only
    assert cat["worst"][2] == {"rank": 3, "image_id": "a", "score": 0.6, "box": [50.0, 50.0, 70.0, 70.0],
                               "type": "Sim", "iou": 1.0, "object_class": "dog", "object_box": [50.0, 50.0, 70.0, 70.0]}
    assert summary["groups"] == [["cat", "dog"]]
    assert "cat" in result.table() and "Loc" in result.table()


# ----------------------------------------------------------------------------- the command


def test_analyze_command_on_a_tiny_voc_folder(tmp_path, capsys):
    from sppnet.cli import main
    from sppnet.data.datasets import open_detection_dataset
    from sppnet.data.voc import write_voc_annotation, write_voc_split
    from sppnet.evaluation import write_voc_results

    data, run = tmp_path / "data", tmp_path / "run"
    (data / "JPEGImages").mkdir(parents=True)
    for rec in main_dataset().images:
        rec.image_path = data / "JPEGImages" / f"{rec.image_id}.jpg"
        Image.fromarray(np.full((100, 100, 3), 128, np.uint8)).save(rec.image_path)
        write_voc_annotation(data, rec, CLASSES)
    write_voc_split(data, "test", ["a", "b"])
    dataset = open_detection_dataset(data, "test")  # classes sorted by name: bird, cat, dog
    cat = dataset.classes.index("cat")
    write_voc_results({cat: main_detections()[CAT]}, dataset.classes, "test", run / "results-test")

    out = tmp_path / "analysis"
    assert main(["analyze", "--run", str(run), "--data", str(data), "--split", "test", "--out", str(out),
                 "--groups", "cat,dog", "--top-fp", "2"]) == 0
    printed = capsys.readouterr().out
    assert "cat" in printed and "diagnosis.json" in printed
    summary = json.loads((out / "diagnosis.json").read_text())
    assert summary["classes"]["cat"]["ap"] == pytest.approx(52 / 77, abs=1e-12)
    assert summary["classes"]["cat"]["breakdown"][-1] == {
        "multiple": 4.0, "top": 8, "considered": 5, "Loc": 2, "Sim": 1, "Oth": 1, "BG": 1, "recall": 1.0}
    assert summary["classes"]["dog"]["ap"] == 0.0
    assert (out / "fp_types.png").stat().st_size > 0 and (out / "size_ap.png").stat().st_size > 0
    drawn = sorted(p.name for p in (out / "worst_fp" / "cat").iterdir())
    assert drawn == ["01_Loc_a.png", "02_Loc_b.png"]
    assert Image.open(out / "worst_fp" / "cat" / "01_Loc_a.png").size == (100, 100)

    # A run that was never evaluated: the error says how to get its detections.
    assert main(["analyze", "--run", str(tmp_path / "other"), "--data", str(data), "--split", "test",
                 "--out", str(out)]) == 2
    assert "sppnet eval detect" in capsys.readouterr().err
