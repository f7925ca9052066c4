"""Pascal VOC detection average precision, with the devkit's rules (SPEC section 9).

Shapes and names::

    D      detections of one class, over all images
    G      ground-truth objects of one class, over all images
    K      object classes (labels 1..K; label 0 is the background)
    boxes  Tensor[D, 4] / Tensor[G, 4]  float, xyxy, 0-based continuous pixels
    scores Tensor[D]                    float, higher = more confident

Box convention (DESIGN "Conventions"): xyxy, 0-based continuous pixel
coordinates, width = x2 - x1. The VOC devkit works on 1-based inclusive pixel
boxes and adds 1 to every width and height. Our readers convert a devkit box
(X1, Y1, X2, Y2) to (X1 - 1, Y1 - 1, X2, Y2); under that conversion the devkit's
widths ``X2 - X1 + 1`` equal our ``x2 - x1``, and its intersection width
``min(X2, X2') - max(X1, X1') + 1`` equals our ``min(x2, x2') - max(x1, x1')``.
So the plain continuous-coordinate IoU used here *is* the devkit's overlap
(exactly, not approximately; the tests check it against a port of the devkit
working on 1-based integer boxes).

The matching rules are those of ``VOCevaldet.m``:

* detections are sorted by descending score (a stable sort: ties keep their
  input order, as MATLAB's ``sort`` does);
* each detection is compared with every ground-truth object of its class in
  its image (difficult ones included) and takes the one of highest IoU (the
  first one on a tie);
* if that IoU is ``>= iou_threshold`` (the devkit's ``>=``; the py-faster-rcnn
  port uses ``>``): a difficult object makes the detection count neither as a
  true nor as a false positive; an object not yet detected makes it a true
  positive (and marks the object detected); an object already detected makes
  it a false positive (a duplicate);
* otherwise the detection is a false positive;
* difficult objects are not counted among the positives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from sppnet.data.records import BACKGROUND, DetectionDataset, ImageRecord

__all__ = [
    "METRICS",
    "ClassResult",
    "DetectionEvaluation",
    "Detections",
    "detections_from_outputs",
    "evaluate_class",
    "evaluate_detections",
    "voc_ap",
]

#: Metric name -> whether it uses the VOC2007 11-point interpolated AP.
METRICS = {"voc07": True, "voc12": False}


def _as_float_tensor(value, name: str, dim: int) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"Detections.{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"Detections.{name} must have a floating point dtype, got {value.dtype}")
    if value.dim() != dim:
        raise ValueError(f"Detections.{name} must have {dim} dimension(s), got shape {tuple(value.shape)}")
    return value.detach().cpu()


@dataclass(frozen=True)
class Detections:
    """All detections of ONE class, over a whole split.

    Attributes:
        image_ids: ``tuple[str, ...]`` of length D, the image of each
            detection (any sequence of strings is accepted and stored as a
            tuple).
        scores: ``Tensor[D]`` float, on the CPU.
        boxes: ``Tensor[D, 4]`` float xyxy, 0-based continuous pixels
            (width = x2 - x1), on the CPU.

    Raises:
        TypeError: a field of the wrong type (non-string id, integer tensor).
        ValueError: mismatched lengths, wrong shapes, a NaN or infinite value,
            or a box with x2 < x1 or y2 < y1 (the row is named).
    """

    image_ids: tuple[str, ...]
    scores: Tensor
    boxes: Tensor

    def __post_init__(self) -> None:
        if isinstance(self.image_ids, str):
            raise TypeError("Detections.image_ids must be a sequence of strings, got a single string")
        ids = tuple(self.image_ids)
        for i, image_id in enumerate(ids):
            if not isinstance(image_id, str):
                raise TypeError(f"Detections.image_ids[{i}] must be a str, got {type(image_id).__name__}")
        scores = _as_float_tensor(self.scores, "scores", 1)
        boxes = _as_float_tensor(self.boxes, "boxes", 2)
        if boxes.shape[1] != 4:
            raise ValueError(f"Detections.boxes must have shape (D, 4) (x1, y1, x2, y2), got {tuple(boxes.shape)}")
        if not (len(ids) == scores.shape[0] == boxes.shape[0]):
            raise ValueError(
                f"Detections fields disagree in length: {len(ids)} image ids, "
                f"{scores.shape[0]} scores, {boxes.shape[0]} boxes"
            )
        if scores.numel() and not bool(torch.isfinite(scores).all()):
            row = int((~torch.isfinite(scores)).nonzero()[0, 0])
            raise ValueError(f"Detections.scores[{row}] is not finite ({float(scores[row])}, image {ids[row]!r})")
        if boxes.numel():
            bad = ~torch.isfinite(boxes).all(dim=1)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"Detections.boxes row {row} (image {ids[row]!r}) has a NaN or infinite coordinate: "
                    f"{boxes[row].tolist()}"
                )
            bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"Detections.boxes row {row} (image {ids[row]!r}) has x2 < x1 or y2 < y1 "
                    f"(expected xyxy boxes): {boxes[row].tolist()}"
                )
        object.__setattr__(self, "image_ids", ids)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "boxes", boxes)

    @classmethod
    def empty(cls) -> Detections:
        """No detections (D = 0)."""
        return cls((), torch.zeros(0), torch.zeros(0, 4))

    def __len__(self) -> int:
        return len(self.image_ids)


def detections_from_outputs(
    image_ids: Sequence[str], outputs: Sequence[Mapping[str, Tensor]], num_classes: int
) -> dict[int, Detections]:
    """Regroup per-image model outputs into per-class :class:`Detections`.

    Args:
        image_ids: N image ids, one per output.
        outputs: N dicts in the torchvision detection contract: ``boxes``
            ``Tensor[M, 4]`` float xyxy (0-based continuous pixels of the
            original image), ``labels`` ``Tensor[M]`` int in 1..K, ``scores``
            ``Tensor[M]`` float.
        num_classes: K + 1 (the background included, as ``dataset.num_classes``).

    Returns:
        ``{label: Detections}`` for every label 1..K (empty ones included),
        each in image order, then in the order of the outputs.

    Raises:
        ValueError: lengths disagree, a key is missing, or a label is outside
            1..K (the image is named).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (the background included), got {num_classes!r}")
    if len(image_ids) != len(outputs):
        raise ValueError(f"got {len(image_ids)} image ids but {len(outputs)} outputs")
    ids: dict[int, list[str]] = {k: [] for k in range(1, num_classes)}
    scores: dict[int, list[Tensor]] = {k: [] for k in range(1, num_classes)}
    boxes: dict[int, list[Tensor]] = {k: [] for k in range(1, num_classes)}
    for image_id, out in zip(image_ids, outputs):
        for key in ("boxes", "labels", "scores"):
            if key not in out:
                raise ValueError(f"output for image {image_id!r} has no {key!r} entry (keys: {sorted(out)})")
        b = out["boxes"].detach().cpu()
        lab = out["labels"].detach().cpu()
        s = out["scores"].detach().cpu()
        if b.dim() != 2 or b.shape[1] != 4 or lab.dim() != 1 or s.dim() != 1 or not (
            b.shape[0] == lab.shape[0] == s.shape[0]
        ):
            raise ValueError(
                f"output for image {image_id!r} must have boxes (M, 4), labels (M,), scores (M,); got "
                f"{tuple(b.shape)}, {tuple(lab.shape)}, {tuple(s.shape)}"
            )
        if lab.numel() and (int(lab.min()) < 1 or int(lab.max()) >= num_classes):
            raise ValueError(
                f"output for image {image_id!r} has labels outside 1..{num_classes - 1}: "
                f"{sorted(set(lab.tolist()))}"
            )
        for k in lab.unique().tolist():
            keep = lab == k
            n = int(keep.sum())
            ids[k].extend([image_id] * n)
            scores[k].append(s[keep])
            boxes[k].append(b[keep])
    result = {}
    for k in range(1, num_classes):
        if ids[k]:
            result[k] = Detections(ids[k], torch.cat(scores[k]), torch.cat(boxes[k]))
        else:
            result[k] = Detections.empty()
    return result


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from a precision/recall curve, as the VOC devkit.

    Args:
        recall: ``[D]`` cumulative recall after each ranked detection
            (non-decreasing, in [0, 1]).
        precision: ``[D]`` cumulative precision after each ranked detection.
        use_07_metric: True for VOC2007's 11-point interpolated AP: the mean,
            over t = 0, 0.1, ..., 1, of the largest precision at recall >= t
            (0 where no recall reaches t). False for VOC2010+'s ``VOCap``: the
            area under the monotone (non-increasing) envelope of precision,
            recall extended with 0 and 1 and precision with 0 and 0.

    The 11 thresholds are exactly ``k / 10`` (the nearest doubles to 0.3, 0.6,
    0.7), so a recall of exactly 3/10 counts for t = 0.3. ``np.arange(0, 1.1,
    0.1)``, used by the py-faster-rcnn port, gives 0.30000000000000004,
    0.6000000000000001 and 0.7000000000000001 instead; results differ only when
    a recall equals one of those fractions exactly.

    Returns:
        AP in [0, 1]; 0.0 for an empty curve.

    Raises:
        ValueError: shapes differ or are not 1-D, or a value is not finite.
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if rec.ndim != 1 or prec.shape != rec.shape:
        raise ValueError(f"recall and precision must be 1-D of equal length, got {rec.shape} and {prec.shape}")
    if not (np.isfinite(rec).all() and np.isfinite(prec).all()):
        raise ValueError("recall and precision must be finite (a class without positives has no AP)")
    if use_07_metric:
        total = 0.0
        for k in range(11):
            reached = prec[rec >= k / 10]
            total += float(reached.max()) if reached.size else 0.0
        return total / 11.0
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[change] - mrec[change - 1]) * mpre[change]))


@dataclass(frozen=True)
class ClassResult:
    """Evaluation of one class.

    Attributes:
        ap: average precision in [0, 1]; NaN when the class has no
            (non-difficult) positives.
        recall: ``np.ndarray[D]`` float64, cumulative recall after each
            detection in ranked order (NaN everywhere when there are no
            positives).
        precision: ``np.ndarray[D]`` float64, cumulative precision after each
            detection in ranked order (0 while no detection has counted yet,
            e.g. when the first ones all hit difficult objects).
        num_positives: non-difficult ground-truth objects of the class.
    """

    ap: float
    recall: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)
    num_positives: int

    @property
    def num_detections(self) -> int:
        return int(self.recall.shape[0])


def _iou_rows(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU ``[d, g]`` of continuous xyxy boxes (see the module docstring for
    why this equals the devkit's +1 overlap); 0 where the union is empty."""
    iw = np.minimum(det[:, None, 2], gt[None, :, 2]) - np.maximum(det[:, None, 0], gt[None, :, 0])
    ih = np.minimum(det[:, None, 3], gt[None, :, 3]) - np.maximum(det[:, None, 1], gt[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_d = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    union = area_d[:, None] + area_g[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def evaluate_class(
    dets: Detections,
    records: Sequence[ImageRecord],
    label: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> ClassResult:
    """VOC AP of one class, with the devkit's matching rules (module docstring).

    Args:
        dets: the class's detections over the split; boxes 0-based continuous
            xyxy.
        records: every image of the split (boxes 0-based continuous xyxy,
            ``labels`` in 1..K, ``difficult`` flags).
        label: the class's label (1..K); only ground truths of this label count.
        iou_threshold: minimum IoU for a match, in (0, 1] (devkit: 0.5).
        use_07_metric: VOC2007 11-point AP if True, else VOC2010+ area AP.

    Returns:
        A :class:`ClassResult`. A class with no non-difficult ground truth has
        AP = NaN (the devkit's recall divides by npos = 0), whatever its
        detections; :func:`evaluate_detections` leaves such classes out of the
        mean.

    Raises:
        ValueError: a detection's image id is not among ``records`` (the id is
            named), duplicate image ids in ``records``, or a bad threshold.
    """
    threshold = float(iou_threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")

    # Ground truths of this class, concatenated over images; per image a slice.
    index: dict[str, int] = {}
    gt_boxes: list[np.ndarray] = []
    gt_difficult: list[np.ndarray] = []
    offsets = [0]
    for i, rec in enumerate(records):
        if rec.image_id in index:
            raise ValueError(f"image id {rec.image_id!r} appears twice in the records")
        index[rec.image_id] = i
        keep = (rec.labels.cpu() == label).numpy()
        gt_boxes.append(rec.boxes.cpu().numpy().astype(np.float64).reshape(-1, 4)[keep])
        gt_difficult.append(rec.difficult.cpu().numpy().astype(bool)[keep])
        offsets.append(offsets[-1] + int(keep.sum()))
    all_difficult = np.concatenate(gt_difficult) if gt_difficult else np.zeros(0, dtype=bool)
    num_positives = int((~all_difficult).sum())

    num_dets = len(dets)
    image_of = np.empty(num_dets, dtype=np.int64)
    for d, image_id in enumerate(dets.image_ids):
        i = index.get(image_id)
        if i is None:
            raise ValueError(f"detection {d} is for image {image_id!r}, which is not in the dataset's records")
        image_of[d] = i

    # Ranked order: descending score, stable.
    order = np.argsort(-dets.scores.numpy().astype(np.float64), kind="stable")
    boxes = dets.boxes.numpy().astype(np.float64)[order]
    image_of = image_of[order]

    # Best ground truth (global index) and its IoU for every ranked detection.
    best_iou = np.full(num_dets, -np.inf)
    best_gt = np.full(num_dets, -1, dtype=np.int64)
    by_image = np.argsort(image_of, kind="stable")  # ranked rows grouped by image
    images, starts = np.unique(image_of[by_image], return_index=True)
    ends = np.append(starts[1:], num_dets)
    for i, start, end in zip(images.tolist(), starts.tolist(), ends.tolist()):
        lo, hi = offsets[i], offsets[i + 1]
        if hi == lo:
            continue
        rows = by_image[start:end]
        iou = _iou_rows(boxes[rows], gt_boxes[i])
        j = np.argmax(iou, axis=1)  # the first maximum, as the devkit's strict '>'
        best_iou[rows] = iou[np.arange(rows.size), j]
        best_gt[rows] = lo + j

    matched = best_iou >= threshold
    ignored = np.zeros(num_dets, dtype=bool)
    ignored[matched] = all_difficult[best_gt[matched]]
    hits = matched & ~ignored
    tp = np.zeros(num_dets, dtype=np.float64)
    hit_rows = np.flatnonzero(hits)
    # The first (highest-ranked) hit on an object is the true positive; later
    # hits on it are duplicates, i.e. false positives.
    _, first = np.unique(best_gt[hit_rows], return_index=True)
    tp[hit_rows[first]] = 1.0
    fp = np.where(ignored, 0.0, 1.0 - tp)

    tp = np.cumsum(tp)
    fp = np.cumsum(fp)
    counted = tp + fp
    precision = np.divide(tp, counted, out=np.zeros_like(tp), where=counted > 0)
    if num_positives == 0:
        return ClassResult(math.nan, np.full(num_dets, math.nan), precision, 0)
    recall = tp / num_positives
    return ClassResult(voc_ap(recall, precision, use_07_metric), recall, precision, num_positives)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else math.nan


@dataclass(frozen=True)
class DetectionEvaluation:
    """The result of :func:`evaluate_detections`.

    Attributes:
        metric: ``"voc07"`` or ``"voc12"``.
        iou_threshold: the IoU needed for a match.
        class_names: ``{label: name}`` for labels 1..K.
        per_class: ``{label: ClassResult}`` for labels 1..K.
    """

    metric: str
    iou_threshold: float
    class_names: dict[int, str]
    per_class: dict[int, ClassResult]

    @property
    def ap(self) -> dict[str, float]:
        """``{class name: AP}`` (NaN for classes without positives)."""
        return {self.class_names[k]: float(r.ap) for k, r in sorted(self.per_class.items())}

    @property
    def map(self) -> float:
        """Mean AP over classes that have positives (NaN if none has)."""
        return _nanmean([r.ap for r in self.per_class.values()])

    def to_json(self) -> dict:
        """``{"metric": str, "map": float, "ap": {class name: float}}``; NaN
        stays ``float('nan')`` (``json.dumps`` writes it as ``NaN``)."""
        return {"metric": self.metric, "map": self.map, "ap": self.ap}

    def table(self) -> str:
        """A printable per-class table: AP in percent, positives, detections
        and the mAP (classes without positives show ``n/a``)."""
        width = max([len("class"), len("mAP")] + [len(n) for n in self.class_names.values()])
        lines = [
            f"{self.metric} AP at IoU >= {self.iou_threshold:g}",
            f"{'class':<{width}}  {'AP (%)':>7}  {'positives':>9}  {'detections':>10}",
        ]
        for k, r in sorted(self.per_class.items()):
            ap = "n/a" if math.isnan(r.ap) else f"{100 * r.ap:.2f}"
            lines.append(f"{self.class_names[k]:<{width}}  {ap:>7}  {r.num_positives:>9}  {r.num_detections:>10}")
        m = self.map
        lines.append(f"{'mAP':<{width}}  {'n/a' if math.isnan(m) else f'{100 * m:.2f}':>7}")
        return "\n".join(lines)


def check_per_class(per_class: Mapping[int, "Detections"], dataset: DetectionDataset) -> tuple[str, ...]:
    """The dataset's classes, after checking that it has the background first
    and that every key of ``per_class`` is an object label 1..K."""
    classes = tuple(dataset.classes)
    if not classes or classes[0] != BACKGROUND:
        raise ValueError(f"dataset.classes[0] must be {BACKGROUND!r}, got {classes[:1]!r}")
    for k in per_class:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < len(classes):
            raise ValueError(f"per_class keys must be labels in 1..{len(classes) - 1}, got {k!r}")
    return classes


def evaluate_detections(
    per_class: Mapping[int, Detections],
    dataset: DetectionDataset,
    metric: str = "voc07",
    iou_threshold: float = 0.5,
) -> DetectionEvaluation:
    """VOC AP of every class of ``dataset`` and their mean.

    Args:
        per_class: ``{label: Detections}`` with labels in 1..K (boxes 0-based
            continuous xyxy); a missing label means no detections.
        dataset: the split evaluated on; ``classes[0]`` must be the background.
        metric: ``"voc07"`` (11-point AP) or ``"voc12"`` (area under the
            precision envelope, VOC2010 and later).
        iou_threshold: IoU needed for a match (devkit: 0.5, ``>=``).

    Returns:
        A :class:`DetectionEvaluation`; ``.to_json()`` gives
        ``{"metric", "map", "ap": {class name: AP}}``. Classes without
        (non-difficult) positives get AP = NaN and are left out of the mAP
        (``np.nanmean``).

    Raises:
        ValueError: unknown metric, a label outside 1..K, a detection on an
            image not in the dataset.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    classes = check_per_class(per_class, dataset)
    num_classes = len(classes)
    results = {
        k: evaluate_class(
            per_class.get(k, Detections.empty()), dataset.images, k, iou_threshold, METRICS[metric]
        )
        for k in range(1, num_classes)
    }
    return DetectionEvaluation(
        metric=metric,
        iou_threshold=float(iou_threshold),
        class_names={k: classes[k] for k in range(1, num_classes)},
        per_class=results,
    )
