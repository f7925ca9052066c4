"""COCO-style box AP (AP@[.5:.95], AP50, AP75) with pycocotools' ``COCOeval``.

The ground truth and the detections are built in memory from a
:class:`~sppnet.data.records.DetectionDataset` and per-class
:class:`~sppnet.evaluation.voc.Detections`; nothing is written to disk.

Conversions: image ids become 1..N (position in ``dataset.images`` + 1),
category ids are the labels 1..K, and boxes go from 0-based continuous xyxy
(DESIGN "Conventions") to COCO's continuous ``[x, y, w, h] = [x1, y1, x2 - x1,
y2 - y1]`` with area ``w * h`` (both conventions are continuous: no +1).
Difficult objects are given ``iscrowd = 1``, so COCOeval ignores them and the
detections that land on them (crowd matching, IoU over the detection's area).
COCOeval's defaults apply: at most 100 detections per image and class count,
10 IoU thresholds 0.50:0.05:0.95, 101 recall points.

pycocotools is imported when :func:`evaluate_coco` is called, so the rest of
the package works without it.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping

import numpy as np

from sppnet.data.records import DetectionDataset
from sppnet.evaluation.voc import Detections, check_per_class

__all__ = ["evaluate_coco"]


def _xywh(boxes) -> list[list[float]]:
    b = boxes.double()
    return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in b.tolist()]


def evaluate_coco(per_class: Mapping[int, Detections], dataset: DetectionDataset) -> dict:
    """COCO box metrics of detections on ``dataset``.

    Args:
        per_class: ``{label: Detections}`` with labels in 1..K; boxes 0-based
            continuous xyxy ``[D, 4]``, scores ``[D]``. Missing labels have no
            detections.
        dataset: the split; ``classes[0]`` is the background.

    Returns:
        ``{"metric": "coco", "map": AP@[.5:.95], "ap50": AP@.5, "ap75": AP@.75,
        "ap": {class name: AP@[.5:.95]}}`` as Python floats in [0, 1]. The
        per-class AP is the mean of ``eval['precision'][:, :, k, area=all,
        maxDets=100]`` over its valid (> -1) entries; a class without
        non-difficult ground truth gets NaN, as does ``map`` etc. when no class
        has any. With no detections at all every AP is 0 (NaN for classes
        without ground truth).

    Raises:
        ValueError: a label outside 1..K or a detection on an image not in
            the dataset (the id is named).
        ImportError: pycocotools is not installed.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = check_per_class(per_class, dataset)
    num_classes = len(classes)

    image_ids: dict[str, int] = {}
    images = []
    annotations = []
    for i, rec in enumerate(dataset.images):
        if rec.image_id in image_ids:
            raise ValueError(f"image id {rec.image_id!r} appears twice in the dataset")
        image_ids[rec.image_id] = i + 1
        images.append({"id": i + 1, "width": int(rec.width), "height": int(rec.height), "file_name": rec.image_id})
        for box, label, hard in zip(_xywh(rec.boxes.cpu()), rec.labels.tolist(), rec.difficult.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval needs ids > 0
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(bool(hard)),
                }
            )
    categories = [{"id": k, "name": classes[k]} for k in range(1, num_classes)]

    results = []
    for k, dets in sorted(per_class.items()):
        for image_id, score, box in zip(dets.image_ids, dets.scores.double().tolist(), _xywh(dets.boxes)):
            coco_id = image_ids.get(image_id)
            if coco_id is None:
                raise ValueError(f"a detection of class {classes[k]!r} is for image {image_id!r}, not in the dataset")
            results.append(
                {
                    "id": len(results) + 1,
                    "image_id": coco_id,
                    "category_id": k,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "score": score,
                    "iscrowd": 0,
                }
            )

    has_positives = {k: False for k in range(1, num_classes)}
    for ann in annotations:
        if not ann["iscrowd"]:
            has_positives[ann["category_id"]] = True
    if not results:
        zero = 0.0 if any(has_positives.values()) else math.nan
        return {
            "metric": "coco",
            "map": zero,
            "ap50": zero,
            "ap75": zero,
            "ap": {classes[k]: (0.0 if has_positives[k] else math.nan) for k in range(1, num_classes)},
        }

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        gt.createIndex()
        dt = COCO()
        dt.dataset = {"images": images, "annotations": results, "categories": categories}
        dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    def stat(i: int) -> float:
        v = float(evaluator.stats[i])
        return math.nan if v < 0 else v  # COCOeval reports -1 when nothing is valid

    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    area_all = list(evaluator.params.areaRngLbl).index("all")
    max_dets = len(evaluator.params.maxDets) - 1  # the largest, 100
    per_class_ap = {}
    for col, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, col, area_all, max_dets]
        valid = p[p > -1]
        per_class_ap[classes[cat_id]] = float(np.mean(valid)) if valid.size else math.nan
    return {"metric": "coco", "map": stat(0), "ap50": stat(1), "ap75": stat(2), "ap": per_class_ap}
