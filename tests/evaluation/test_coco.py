"""COCO metrics through pycocotools on cases whose answer is known."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sppnet.data.records import BACKGROUND, DetectionDataset, ImageRecord
from sppnet.evaluation import Detections, evaluate_coco

pytest.importorskip("pycocotools")

CLASSES = (BACKGROUND, "cat", "dog", "bird")


def dataset():
    recs = [
        ImageRecord("a", Path("a.jpg"), 100, 80, boxes=torch.tensor([[0.0, 0, 30, 40], [50, 10, 90, 70]]),
                    labels=torch.tensor([1, 2]), difficult=torch.tensor([False, False]),
                    truncated=torch.tensor([False, False])),
        ImageRecord("b", Path("b.jpg"), 60, 60, boxes=torch.tensor([[5.0, 5, 25, 45], [30, 30, 59, 59]]),
                    labels=torch.tensor([1, 2]), difficult=torch.tensor([False, True]),
                    truncated=torch.tensor([False, False])),
    ]
    return DetectionDataset(Path("."), "val", CLASSES, recs)


def perfect(ds):
    per = {}
    for k in (1, 2):
        ids, boxes = [], []
        for rec in ds.images:
            keep = (rec.labels == k) & ~rec.difficult
            ids += [rec.image_id] * int(keep.sum())
            boxes.append(rec.boxes[keep])
        per[k] = Detections(ids, torch.linspace(0.9, 0.5, len(ids)), torch.cat(boxes))
    return per


def test_perfect_detections():
    ds = dataset()
    out = evaluate_coco(perfect(ds), ds)
    assert out["metric"] == "coco"
    assert out["map"] == pytest.approx(1.0) and out["ap50"] == pytest.approx(1.0) and out["ap75"] == pytest.approx(1.0)
    assert list(out["ap"]) == ["cat", "dog", "bird"]
    assert out["ap"]["cat"] == pytest.approx(1.0) and out["ap"]["dog"] == pytest.approx(1.0)
    assert math.isnan(out["ap"]["bird"])  # no ground truth


def test_detection_on_difficult_object_is_ignored():
    ds = dataset()
    per = perfect(ds)
    # Add a confident dog detection exactly on image b's difficult (crowd) dog.
    d = per[2]
    per[2] = Detections(d.image_ids + ("b",), torch.cat([d.scores, torch.tensor([0.99])]),
                        torch.cat([d.boxes, torch.tensor([[30.0, 30, 59, 59]])]))
    assert evaluate_coco(per, ds)["ap"]["dog"] == pytest.approx(1.0)


def test_no_detections():
    ds = dataset()
    out = evaluate_coco({}, ds)
    assert out["map"] == 0.0 and out["ap50"] == 0.0 and out["ap75"] == 0.0
    assert out["ap"]["cat"] == 0.0 and out["ap"]["dog"] == 0.0 and math.isnan(out["ap"]["bird"])
    out = evaluate_coco({1: Detections.empty(), 2: Detections.empty()}, ds)
    assert out["map"] == 0.0


def test_only_wrong_detections_score_zero():
    ds = dataset()
    per = {1: Detections(["a"], torch.tensor([0.9]), torch.tensor([[60.0, 60, 70, 70]]))}
    out = evaluate_coco(per, ds)
    assert out["map"] == 0.0 and out["ap"]["cat"] == 0.0 and out["ap"]["dog"] == 0.0


def test_unknown_image():
    ds = dataset()
    with pytest.raises(ValueError, match="'zzz'"):
        evaluate_coco({1: Detections(["zzz"], torch.tensor([0.9]), torch.tensor([[0.0, 0, 1, 1]]))}, ds)
