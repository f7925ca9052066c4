"""Detection error analysis of Hoiem, Chodpathumwan and Dai (ECCV 2012), SPEC section 11.

Shapes and names::

    K      object classes (labels 1..K; label 0 is the background)
    D      detections of one class, over all images
    O      ground-truth objects of every class, over all images
    F      false positives of one class, in ranked order
    P      points of a false-positive curve
    T = 4  false-positive types, in the order of ``FP_TYPES``: Loc, Sim, Oth, BG
    boxes  float, xyxy, 0-based continuous pixels (DESIGN "Conventions")

Matching is the VOC evaluator's (:mod:`sppnet.evaluation.voc`, SPEC section
9): per class, detections in descending score (a stable sort), each compared
with every object of its class in its image (difficult ones included) and
taking the one of highest IoU (the first on a tie); IoU ``>= iou_threshold``
with a difficult object: ignored (neither true nor false positive); with an
object not yet detected: true positive; with an object already detected:
false positive (a duplicate); anything else: false positive. The IoU is the
evaluator's own (``voc._iou_rows``), so the AP here equals
:func:`~sppnet.evaluation.voc.evaluate_class`'s.

Each false positive gets one type, the first that applies:

* ``Loc``: IoU ``>= low_iou`` (0.1) with an object of the *same* class. This
  covers the poor localisations (IoU in [0.1, 0.5)) and the duplicates (IoU
  ``>= 0.5`` with an object already matched by a higher-scored detection);
* ``Sim``: IoU ``>= low_iou`` with an object of a class that shares a
  user-declared similarity group with the detection's class;
* ``Oth``: IoU ``>= low_iou`` with an object of any other class;
* ``BG``: IoU ``< low_iou`` with every object.

Difficult objects are never positives and a detection matched to one
(same class, IoU ``>= iou_threshold``) is ignored, as in the devkit. They are
still objects when a false positive's type is decided, as in Hoiem et al.'s
code (its low-overlap matching keeps them): a box half on a difficult cat is a
``Loc`` error of the cat detector, not background.

The false-positive curve of a class: its false positives in ranked order; at
each count k = 1 .. ``max_multiple`` x (its objects) the number of each type
among the top k, and the recall reached by the detections ranked above the
k-th (the recall of all detections where there are fewer than k false
positives). The tables give the same at k = ``round(m x objects)`` (at least
1) for each multiple m of ``multiples``. Over all classes, the counts and true
positives of every class at its own k are summed (the recall divides by all
objects).

Object size: the non-difficult objects of a class are binned by area
percentile (XS the smallest 10%, S the next 20%, M the middle 40%, L the next
20%, XL the largest 10%; see :func:`size_bin_indices`) and AP is computed per
bin with the objects of the other bins treated as difficult ones (not
positives; a detection matched to one counts neither way). The normalised AP
of Hoiem et al. replaces precision by ``R N / (R N + F)`` (recall R, false
positives F, a constant N shared by all classes and bins, by default the mean
number of objects per class), so that classes and bins with few objects
compare fairly.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sppnet.atomic import atomic_write_text
from sppnet.data.records import DetectionDataset, ImageRecord
from sppnet.evaluation.voc import METRICS, Detections, _iou_rows, check_per_class, voc_ap

__all__ = [
    "DEFAULT_MULTIPLES",
    "FP_TYPES",
    "SIZE_BINS",
    "AnalysisOutputs",
    "ClassDiagnosis",
    "Diagnosis",
    "DiagnosisConfig",
    "FPBreakdown",
    "FPCurve",
    "FalsePositive",
    "SizeBinAP",
    "analyze_results_folder",
    "diagnose_detections",
    "parse_groups",
    "size_bin_indices",
]

#: The false-positive types, in priority order (the first that applies wins).
FP_TYPES = ("Loc", "Sim", "Oth", "BG")
LOC, SIM, OTH, BG = range(4)
#: The object size bins, smallest first.
SIZE_BINS = ("XS", "S", "M", "L", "XL")
#: Multiples of a class's object count at which the false-positive tables are given.
DEFAULT_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)

# Points of the pooled (all classes) curve, spaced evenly in log scale.
_POOLED_POINTS = 256


# ----------------------------------------------------------------------------- config


def parse_groups(text: str | None) -> tuple[tuple[str, ...], ...]:
    """Similarity groups from ``"cat,dog;car,bus,train"`` (groups split by
    ``;``, classes by ``,``; spaces around names are dropped). ``None`` or an
    empty string: no groups.

    Raises:
        ValueError: an empty class name, or a group of fewer than two classes.
    """
    if text is None or not text.strip():
        return ()
    groups = []
    for part in text.split(";"):
        if not part.strip():
            continue
        names = tuple(name.strip() for name in part.split(","))
        if any(not name for name in names):
            raise ValueError(
                f"similarity group {part.strip()!r} has an empty class name (expected e.g. 'cat,dog;car,bus')")
        if len(set(names)) < 2:
            raise ValueError(f"similarity group {part.strip()!r} needs at least two different classes")
        groups.append(names)
    return tuple(groups)


@dataclass(frozen=True)
class DiagnosisConfig:
    """Settings of :func:`diagnose_detections`.

    Attributes:
        metric: ``"voc07"`` (11-point AP) or ``"voc12"`` (area AP).
        iou_threshold: IoU needed for a match (devkit: 0.5, ``>=``).
        low_iou: the IoU below which a false positive does not touch an
            object (Hoiem et al.: 0.1).
        groups: similarity groups, tuples of class names (``parse_groups``).
        multiples: multiples of a class's object count at which the
            false-positive tables are given.
        max_multiple: the curves run to this many times the object count.
        top_fp: worst (highest-scored) false positives kept per class.
        normalized_count: N of the normalised AP; None for the mean number of
            (non-difficult) objects over the classes that have any.
    """

    metric: str = "voc07"
    iou_threshold: float = 0.5
    low_iou: float = 0.1
    groups: tuple[tuple[str, ...], ...] = ()
    multiples: tuple[float, ...] = DEFAULT_MULTIPLES
    max_multiple: float = 4.0
    top_fp: int = 5
    normalized_count: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if not 0.0 < float(self.iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold!r}")
        if not 0.0 < float(self.low_iou) < float(self.iou_threshold):
            raise ValueError(f"low_iou must be in (0, iou_threshold), got {self.low_iou!r}")
        if isinstance(self.groups, str):
            raise TypeError("groups must be a sequence of class-name sequences; use parse_groups('a,b;c,d')")
        groups = tuple(tuple(group) for group in self.groups)
        for group in groups:
            if not all(isinstance(name, str) and name for name in group):
                raise TypeError(f"similarity groups hold class names (non-empty strings), got {group!r}")
        multiples = tuple(float(m) for m in self.multiples)
        if not multiples or not all(math.isfinite(m) and m > 0 for m in multiples):
            raise ValueError(f"multiples must be positive numbers, got {self.multiples!r}")
        if not (math.isfinite(float(self.max_multiple)) and float(self.max_multiple) > 0):
            raise ValueError(f"max_multiple must be a positive number, got {self.max_multiple!r}")
        if isinstance(self.top_fp, bool) or not isinstance(self.top_fp, int) or self.top_fp < 0:
            raise ValueError(f"top_fp must be an int >= 0, got {self.top_fp!r}")
        if self.normalized_count is not None and not (
            math.isfinite(float(self.normalized_count)) and float(self.normalized_count) > 0
        ):
            raise ValueError(f"normalized_count must be a positive number or None, got {self.normalized_count!r}")
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "multiples", multiples)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FalsePositive:
    """One false positive of a class.

    Attributes:
        rank: its position among the class's ranked detections (0 = highest score).
        image_id: the image.
        score: its score.
        box: ``(x1, y1, x2, y2)``, 0-based continuous pixels.
        kind: one of ``FP_TYPES``.
        iou: its IoU with ``object_box`` (Loc, Sim, Oth); for BG the largest
            IoU with any object (0 if the image has none).
        object_label: the label of the object that explains the type (the
            detection's own class for Loc); None for BG.
        object_box: that object's box; None for BG.
    """

    rank: int
    image_id: str
    score: float
    box: tuple[float, float, float, float]
    kind: str
    iou: float
    object_label: int | None
    object_box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class FPCurve:
    """False-positive types among the top-ranked false positives.

    Attributes:
        num_fp: ``np.ndarray[P]`` int, the false positives considered at each
            point (for one class: 1, 2, ..., P).
        counts: ``np.ndarray[P, 4]`` int, how many of them are of each type
            (columns in ``FP_TYPES`` order); rows sum to ``num_fp``.
        recall: ``np.ndarray[P]`` float, the recall reached at each point.
    """

    num_fp: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)

    @property
    def fractions(self) -> np.ndarray:
        """``np.ndarray[P, 4]``: ``counts / num_fp``."""
        return self.counts / np.maximum(self.num_fp, 1)[:, None]

    def __len__(self) -> int:
        return int(self.num_fp.shape[0])


@dataclass(frozen=True)
class FPBreakdown:
    """False-positive types among the top ``top`` false positives.

    Attributes:
        multiple: ``top`` as a multiple of the number of objects.
        top: false positives asked for (``round(multiple x objects)``, at
            least 1; summed over classes for the overall row).
        considered: those that exist (``min(top, false positives)``).
        loc, sim, oth, bg: how many of them are of each type.
        recall: the recall reached by the detections ranked above the last one
            considered (all detections when there are fewer than ``top``).
    """

    multiple: float
    top: int
    considered: int
    loc: int
    sim: int
    oth: int
    bg: int
    recall: float

    def counts(self) -> dict[str, int]:
        """``{"Loc": n, "Sim": n, "Oth": n, "BG": n}``."""
        return dict(zip(FP_TYPES, (self.loc, self.sim, self.oth, self.bg)))

    def to_json(self) -> dict:
        return {"multiple": self.multiple, "top": self.top, "considered": self.considered, **self.counts(),
                "recall": self.recall}


@dataclass(frozen=True)
class SizeBinAP:
    """AP of one class on the objects of one size bin.

    Attributes:
        bin: one of ``SIZE_BINS``.
        num_positives: the bin's (non-difficult) objects.
        min_area, max_area: the range of their areas in pixels (NaN if none).
        ap: AP on the bin, other bins' objects ignored (NaN if no objects).
        normalized_ap: the same with Hoiem et al.'s normalised precision.
    """

    bin: str
    num_positives: int
    min_area: float
    max_area: float
    ap: float
    normalized_ap: float


@dataclass(frozen=True)
class ClassDiagnosis:
    """The error analysis of one class.

    Attributes:
        label, name: the class.
        num_positives: its non-difficult objects.
        num_detections: its detections (D).
        num_tp, num_fp, num_ignored: true positives, false positives and
            detections matched to difficult objects (they sum to D).
        ap, normalized_ap: AP over all its objects (NaN without objects).
        fp_counts: ``{type: count}`` over all its false positives.
        curve: the false-positive curve, k = 1 .. ``max_multiple`` x objects
            (fewer where it has fewer false positives; empty without objects).
        breakdown: one :class:`FPBreakdown` per configured multiple (empty
            without objects).
        sizes: one :class:`SizeBinAP` per bin of ``SIZE_BINS``.
        worst: its ``top_fp`` highest-scored false positives, best first.
    """

    label: int
    name: str
    num_positives: int
    num_detections: int
    num_tp: int
    num_fp: int
    num_ignored: int
    ap: float
    normalized_ap: float
    fp_counts: dict[str, int]
    curve: FPCurve = field(repr=False)
    breakdown: tuple[FPBreakdown, ...] = field(repr=False)
    sizes: tuple[SizeBinAP, ...] = field(repr=False)
    worst: tuple[FalsePositive, ...] = field(repr=False)


def _nanmean(values) -> float:
    finite = [float(v) for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _json_safe(value):
    """NaN -> None, tuples -> lists, numpy scalars -> Python numbers (recursively)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class Diagnosis:
    """The result of :func:`diagnose_detections`.

    Attributes:
        config: the settings used.
        normalized_count: the N of the normalised AP actually used.
        class_names: ``{label: name}`` for labels 1..K.
        per_class: ``{label: ClassDiagnosis}`` for labels 1..K.
        overall_curve: the curve pooled over classes (each class at the same
            multiple of its object count; ``num_fp`` is the pooled count).
        overall_breakdown: one pooled :class:`FPBreakdown` per multiple.
    """

    config: DiagnosisConfig
    normalized_count: float
    class_names: dict[int, str]
    per_class: dict[int, ClassDiagnosis]
    overall_curve: FPCurve = field(repr=False)
    overall_breakdown: tuple[FPBreakdown, ...] = field(repr=False)

    @property
    def map(self) -> float:
        """Mean AP over the classes that have objects (NaN if none has)."""
        return _nanmean(c.ap for c in self.per_class.values())

    @property
    def size_ap(self) -> dict[str, float]:
        """``{bin: mean AP over the classes with objects in that bin}``."""
        return {b: _nanmean(c.sizes[i].ap for c in self.per_class.values()) for i, b in enumerate(SIZE_BINS)}

    @property
    def size_normalized_ap(self) -> dict[str, float]:
        """``{bin: mean normalised AP over the classes with objects in that bin}``."""
        return {b: _nanmean(c.sizes[i].normalized_ap for c in self.per_class.values()) for i, b in enumerate(SIZE_BINS)}

    @property
    def fp_counts(self) -> dict[str, int]:
        """``{type: count}`` over every false positive of every class."""
        return {t: sum(c.fp_counts[t] for c in self.per_class.values()) for t in FP_TYPES}

    def to_json(self) -> dict:
        """A JSON-ready summary (NaN becomes None; boxes are 0-based
        continuous xyxy; class names, not labels, are the keys)."""
        names = self.class_names
        classes = {}
        for label, c in sorted(self.per_class.items()):
            classes[c.name] = {
                "ap": c.ap,
                "normalized_ap": c.normalized_ap,
                "positives": c.num_positives,
                "detections": c.num_detections,
                "true_positives": c.num_tp,
                "false_positives": c.num_fp,
                "ignored": c.num_ignored,
                "fp_counts": c.fp_counts,
                "breakdown": [row.to_json() for row in c.breakdown],
                "sizes": {s.bin: {"positives": s.num_positives, "min_area": s.min_area, "max_area": s.max_area,
                                  "ap": s.ap, "normalized_ap": s.normalized_ap} for s in c.sizes},
                "worst": [{"rank": fp.rank, "image_id": fp.image_id, "score": fp.score, "box": fp.box,
                           "type": fp.kind, "iou": fp.iou,
                           "object_class": None if fp.object_label is None else names[fp.object_label],
                           "object_box": fp.object_box} for fp in c.worst],
            }
        summary = {
            "metric": self.config.metric,
            "iou_threshold": self.config.iou_threshold,
            "low_iou": self.config.low_iou,
            "groups": self.config.groups,
            "normalized_count": self.normalized_count,
            "box_convention": "xyxy, 0-based continuous pixels",
            "map": self.map,
            "overall": {
                "fp_counts": self.fp_counts,
                "breakdown": [row.to_json() for row in self.overall_breakdown],
                "size_ap": self.size_ap,
                "size_normalized_ap": self.size_normalized_ap,
            },
            "classes": classes,
        }
        return _json_safe(summary)

    def table(self) -> str:
        """A printable summary: per class AP, the false-positive types among
        its top N false positives (N = its objects, or the nearest configured
        multiple), the recall then, and AP per size bin, all in percent."""
        multiples = self.config.multiples
        at = min(range(len(multiples)), key=lambda i: abs(math.log(multiples[i])))
        width = max([len("all"), len("class")] + [len(n) for n in self.class_names.values()])

        def pct(value: float, digits: int = 1) -> str:
            return "n/a" if math.isnan(value) else f"{100 * value:.{digits}f}"

        def fp_cells(row: FPBreakdown | None) -> str:
            if row is None or row.considered == 0:
                return "  ".join(f"{'-':>5}" for _ in FP_TYPES) + f"  {'-' if row is None else pct(row.recall):>6}"
            shares = "  ".join(f"{100 * n / row.considered:5.1f}" for n in row.counts().values())
            return f"{shares}  {pct(row.recall):>6}"

        groups = "; ".join(",".join(g) for g in self.config.groups) or "none"
        lines = [
            f"error analysis (Hoiem et al.): {self.config.metric} AP at IoU >= {self.config.iou_threshold:g}, "
            f"similarity groups: {groups}",
            f"false-positive types among the top {multiples[at]:g} x N false positives of each class "
            f"(N = its objects), in %; AP per object size in %",
            f"{'class':<{width}}  {'AP':>5}  {'N':>5}  " + "  ".join(f"{t:>5}" for t in FP_TYPES)
            + f"  {'recall':>6}  " + "  ".join(f"{b:>5}" for b in SIZE_BINS),
        ]
        for _, c in sorted(self.per_class.items()):
            row = c.breakdown[at] if c.breakdown else None
            lines.append(f"{c.name:<{width}}  {pct(c.ap):>5}  {c.num_positives:>5}  {fp_cells(row)}  "
                         + "  ".join(f"{pct(s.ap):>5}" for s in c.sizes))
        total = sum(c.num_positives for c in self.per_class.values())
        sizes = self.size_ap
        lines.append(f"{'all':<{width}}  {pct(self.map):>5}  {total:>5}  {fp_cells(self.overall_breakdown[at])}  "
                     + "  ".join(f"{pct(sizes[b]):>5}" for b in SIZE_BINS))
        return "\n".join(lines)


# ----------------------------------------------------------------------------- core


def size_bin_indices(areas: np.ndarray | Sequence[float]) -> np.ndarray:
    """The size bin (index into ``SIZE_BINS``) of each area, by percentile.

    With the areas sorted, an area of rank r (0-based; tied areas share the
    mean of their ranks) sits at the fraction ``q = r / (n - 1)`` of the range
    (``q = 0.5`` when n = 1): XS if ``q < 0.1``, S if ``q < 0.3``, M if
    ``q <= 0.7``, L if ``q <= 0.9``, XL otherwise. For distinct areas this is
    binning by the 10th, 30th, 70th and 90th percentiles interpolated linearly
    (``np.percentile``'s default); an area exactly on a percentile goes to
    the bin nearer the middle, and tied areas always share a bin. Ten
    distinct areas fall 1, 2, 4, 2, 1 into XS, S, M, L, XL.

    Returns:
        ``np.ndarray[n]`` int64 in 0..4.
    """
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    n = a.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.isfinite(a).all():
        raise ValueError("areas must be finite")
    if n == 1:
        return np.full(1, 2, dtype=np.int64)
    ordered = np.sort(a)
    twice_rank = np.searchsorted(ordered, a, "left") + np.searchsorted(ordered, a, "right") - 1  # 2 x mean rank
    # q = twice_rank / (2 (n - 1)) compared with tenths, in integers (exact).
    s, d = 10 * twice_rank, 2 * (n - 1)
    return np.select([s < d, s < 3 * d, s <= 7 * d, s <= 9 * d], [0, 1, 2, 3], 4).astype(np.int64)


@dataclass(frozen=True)
class _Objects:
    """Every ground-truth object of the split, concatenated over images."""

    boxes: np.ndarray  # [O, 4] float64
    labels: np.ndarray  # [O] int64
    difficult: np.ndarray  # [O] bool
    offsets: np.ndarray  # [N + 1]: image i holds objects offsets[i]:offsets[i + 1]
    index: dict[str, int]  # image id -> image index

    @classmethod
    def of(cls, records: Sequence[ImageRecord]) -> _Objects:
        index: dict[str, int] = {}
        boxes, labels, difficult, offsets = [], [], [], [0]
        for i, rec in enumerate(records):
            if rec.image_id in index:
                raise ValueError(f"image id {rec.image_id!r} appears twice in the records")
            index[rec.image_id] = i
            boxes.append(rec.boxes.detach().cpu().numpy().astype(np.float64).reshape(-1, 4))
            labels.append(rec.labels.detach().cpu().numpy().astype(np.int64).reshape(-1))
            difficult.append(rec.difficult.detach().cpu().numpy().astype(bool).reshape(-1))
            offsets.append(offsets[-1] + boxes[-1].shape[0])
        return cls(
            np.concatenate(boxes) if boxes else np.zeros((0, 4)),
            np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
            np.concatenate(difficult) if difficult else np.zeros(0, dtype=bool),
            np.asarray(offsets, dtype=np.int64),
            index,
        )


@dataclass(frozen=True)
class _Ranked:
    """One class's detections in ranked order and their best overlaps.

    For each of: objects of the same class, of a similar class, of any other
    class: the largest IoU (-inf where the image has none) and the object
    (index into ``_Objects``, -1 where none; the first on a tie)."""

    order: np.ndarray  # [D] indices into the Detections
    image: np.ndarray  # [D] image index
    scores: np.ndarray  # [D]
    boxes: np.ndarray  # [D, 4]
    best_iou: np.ndarray  # [3, D]: same class, similar class, other class
    best_obj: np.ndarray  # [3, D]


def _rank_and_overlap(dets: Detections, objects: _Objects, label: int, similar: frozenset[int]) -> _Ranked:
    num = len(dets)
    image_of = np.empty(num, dtype=np.int64)
    for d, image_id in enumerate(dets.image_ids):
        i = objects.index.get(image_id)
        if i is None:
            raise ValueError(f"detection {d} is for image {image_id!r}, which is not in the dataset's records")
        image_of[d] = i
    order = np.argsort(-dets.scores.numpy().astype(np.float64), kind="stable")  # as the VOC evaluator
    boxes = dets.boxes.numpy().astype(np.float64)[order]
    image_of = image_of[order]
    best_iou = np.full((3, num), -np.inf)
    best_obj = np.full((3, num), -1, dtype=np.int64)
    by_image = np.argsort(image_of, kind="stable")
    images, starts = np.unique(image_of[by_image], return_index=True)
    ends = np.append(starts[1:], num)
    sim_labels = np.asarray(sorted(similar), dtype=np.int64)
    for i, start, end in zip(images.tolist(), starts.tolist(), ends.tolist()):
        lo, hi = int(objects.offsets[i]), int(objects.offsets[i + 1])
        if hi == lo:
            continue
        rows = by_image[start:end]
        iou = _iou_rows(boxes[rows], objects.boxes[lo:hi])
        labels = objects.labels[lo:hi]
        same = labels == label
        sim = np.isin(labels, sim_labels)
        for kind, mask in enumerate((same, sim, ~same & ~sim)):
            cols = np.flatnonzero(mask)
            if cols.size == 0:
                continue
            sub = iou[:, cols]
            j = np.argmax(sub, axis=1)  # the first maximum, as the evaluator
            best_iou[kind, rows] = sub[np.arange(rows.size), j]
            best_obj[kind, rows] = lo + cols[j]
    return _Ranked(order, image_of, dets.scores.numpy().astype(np.float64)[order], boxes, best_iou, best_obj)


def _outcomes(ranked: _Ranked, threshold: float, ignored_objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives (``bool[D]`` each) by the evaluator's rules;
    a detection whose best same-class object (IoU >= threshold) is in
    ``ignored_objects`` is neither."""
    iou, obj = ranked.best_iou[0], ranked.best_obj[0]
    matched = iou >= threshold
    ignored = np.zeros(iou.shape[0], dtype=bool)
    ignored[matched] = ignored_objects[obj[matched]]
    hit_rows = np.flatnonzero(matched & ~ignored)
    tp = np.zeros(iou.shape[0], dtype=bool)
    _, first = np.unique(obj[hit_rows], return_index=True)  # the first hit on an object; later ones are duplicates
    tp[hit_rows[first]] = True
    return tp, ~tp & ~ignored


def _average_precisions(tp: np.ndarray, fp: np.ndarray, positives: int, use_07: bool, n: float) -> tuple[float, float]:
    """(AP, normalised AP) of ranked true/false positives; NaN without positives."""
    if positives == 0:
        return math.nan, math.nan
    ctp = np.cumsum(tp, dtype=np.float64)
    cfp = np.cumsum(fp, dtype=np.float64)
    counted = ctp + cfp
    precision = np.divide(ctp, counted, out=np.zeros_like(ctp), where=counted > 0)
    recall = ctp / positives
    scaled = recall * n
    normalized = np.divide(scaled, scaled + cfp, out=np.zeros_like(ctp), where=(scaled + cfp) > 0)
    return voc_ap(recall, precision, use_07), voc_ap(recall, normalized, use_07)


def _top(multiple: float, positives: int) -> int:
    """``round(multiple x positives)`` (halves up), at least 1."""
    return max(1, int(math.floor(multiple * positives + 0.5)))


@dataclass(frozen=True)
class _FPSequence:
    """A class's false positives in ranked order, for the curves and tables."""

    kinds: np.ndarray  # [F] int, index into FP_TYPES
    tp_before: np.ndarray  # [F] true positives ranked above each
    total_tp: int
    positives: int

    @property
    def cumulative(self) -> np.ndarray:
        """``[F + 1, 4]``: row k = counts of each type among the top k."""
        onehot = np.zeros((self.kinds.size + 1, 4), dtype=np.int64)
        onehot[np.arange(1, self.kinds.size + 1), self.kinds] = 1
        return np.cumsum(onehot, axis=0)

    def at(self, k: int, cumulative: np.ndarray) -> tuple[int, np.ndarray, int]:
        """(considered, counts[4], true positives reached) for the top ``k``."""
        considered = min(k, self.kinds.size)
        tp = int(self.tp_before[k - 1]) if 1 <= k <= self.kinds.size else self.total_tp
        return considered, cumulative[considered], tp


def _breakdown(multiple: float, top: int, considered: int, counts: np.ndarray, tp: int, positives: int) -> FPBreakdown:
    loc, sim, oth, bg = (int(v) for v in counts)
    return FPBreakdown(float(multiple), int(top), int(considered), loc, sim, oth, bg, tp / positives)


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in row)
    return (x1, y1, x2, y2)


def _diagnose_class(
    dets: Detections,
    objects: _Objects,
    label: int,
    name: str,
    similar: frozenset[int],
    config: DiagnosisConfig,
    n: float,
) -> tuple[ClassDiagnosis, _FPSequence]:
    use_07 = METRICS[config.metric]
    ranked = _rank_and_overlap(dets, objects, label, similar)
    tp, fp = _outcomes(ranked, config.iou_threshold, objects.difficult)
    of_class = objects.labels == label
    positives = int((of_class & ~objects.difficult).sum())
    ap, nap = _average_precisions(tp, fp, positives, use_07, n)

    # Types, the first that applies: Loc, Sim, Oth, BG.
    touches = ranked.best_iou >= config.low_iou  # [3, D]
    kinds = np.where(touches[0], LOC, np.where(touches[1], SIM, np.where(touches[2], OTH, BG)))
    fp_rows = np.flatnonzero(fp)
    tp_before = np.cumsum(tp, dtype=np.int64)[fp_rows]  # a false positive adds no true positive itself
    sequence = _FPSequence(kinds[fp_rows].astype(np.int64), tp_before, int(tp.sum()), positives)
    cumulative = sequence.cumulative

    if positives:
        length = min(fp_rows.size, _top(config.max_multiple, positives))
        curve = FPCurve(np.arange(1, length + 1, dtype=np.int64), cumulative[1:length + 1].copy(),
                        sequence.tp_before[:length] / positives)
        breakdown = []
        for m in config.multiples:
            k = _top(m, positives)
            considered, counts, reached = sequence.at(k, cumulative)
            breakdown.append(_breakdown(m, k, considered, counts, reached, positives))
    else:
        curve = FPCurve(np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64), np.zeros(0))
        breakdown = []

    # AP per size bin: the other bins' objects are ignored like difficult ones.
    members = np.flatnonzero(of_class & ~objects.difficult)
    boxes = objects.boxes[members]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    bins = size_bin_indices(areas)
    bin_of = np.full(objects.labels.shape[0], -1, dtype=np.int64)
    bin_of[members] = bins
    sizes = []
    for b, bin_name in enumerate(SIZE_BINS):
        in_bin = bins == b
        count = int(in_bin.sum())
        btp, bfp = _outcomes(ranked, config.iou_threshold, objects.difficult | (bin_of != b))
        bap, bnap = _average_precisions(btp, bfp, count, use_07, n)
        lo = float(areas[in_bin].min()) if count else math.nan
        hi = float(areas[in_bin].max()) if count else math.nan
        sizes.append(SizeBinAP(bin_name, count, lo, hi, bap, bnap))

    worst = []
    for row in fp_rows[: config.top_fp].tolist():
        kind = int(kinds[row])
        if kind == BG:
            iou = float(max(0.0, ranked.best_iou[:, row].max()))
            obj_label, obj_box = None, None
        else:
            obj = int(ranked.best_obj[kind, row])
            iou = float(ranked.best_iou[kind, row])
            obj_label, obj_box = int(objects.labels[obj]), _box(objects.boxes[obj])
        worst.append(FalsePositive(row, dets.image_ids[int(ranked.order[row])], float(ranked.scores[row]),
                                   _box(ranked.boxes[row]), FP_TYPES[kind], iou, obj_label, obj_box))

    result = ClassDiagnosis(
        label=label,
        name=name,
        num_positives=positives,
        num_detections=len(dets),
        num_tp=int(tp.sum()),
        num_fp=int(fp.sum()),
        num_ignored=int(len(dets) - tp.sum() - fp.sum()),
        ap=ap,
        normalized_ap=nap,
        fp_counts=dict(zip(FP_TYPES, (int(v) for v in cumulative[-1]))),
        curve=curve,
        breakdown=tuple(breakdown),
        sizes=tuple(sizes),
        worst=tuple(worst),
    )
    return result, sequence


def _pooled(sequences: Sequence[_FPSequence], config: DiagnosisConfig) -> tuple[FPCurve, tuple[FPBreakdown, ...]]:
    """Curve and table over all classes: each class contributes its top
    ``round(m x its objects)`` false positives at multiple m."""
    sequences = [s for s in sequences if s.positives > 0]
    cumulatives = [s.cumulative for s in sequences]
    positives = sum(s.positives for s in sequences)

    def at(multiple: float) -> tuple[int, int, np.ndarray, int]:
        top = considered = tp = 0
        counts = np.zeros(4, dtype=np.int64)
        for s, cumulative in zip(sequences, cumulatives):
            k = _top(multiple, s.positives)
            c, n, t = s.at(k, cumulative)
            top, considered, counts, tp = top + k, considered + c, counts + n, tp + t
        return top, considered, counts, tp

    if positives == 0:
        empty = FPCurve(np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64), np.zeros(0))
        return empty, tuple(FPBreakdown(m, 0, 0, 0, 0, 0, 0, math.nan) for m in config.multiples)
    breakdown = []
    for m in config.multiples:
        top, considered, counts, tp = at(m)
        breakdown.append(_breakdown(m, top, considered, counts, tp, positives))
    smallest = 1.0 / max(s.positives for s in sequences)
    grid = np.unique(np.concatenate([
        np.geomspace(min(smallest, config.max_multiple), config.max_multiple, _POOLED_POINTS),
        [m for m in config.multiples if m <= config.max_multiple],
    ]))
    xs, rows, recall = [], [], []
    for m in grid.tolist():
        _, considered, counts, tp = at(m)
        if not considered:
            continue
        if xs and considered == xs[-1]:  # same false positives; the recall may still grow
            rows[-1], recall[-1] = counts, tp / positives
        else:
            xs.append(considered)
            rows.append(counts)
            recall.append(tp / positives)
    if not xs:
        return FPCurve(np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64), np.zeros(0)), tuple(breakdown)
    return FPCurve(np.asarray(xs, dtype=np.int64), np.stack(rows), np.asarray(recall)), tuple(breakdown)


def diagnose_detections(
    per_class: Mapping[int, Detections],
    dataset: DetectionDataset,
    config: DiagnosisConfig | None = None,
) -> Diagnosis:
    """Hoiem et al.'s error analysis of every class of ``dataset`` (module docstring).

    Args:
        per_class: ``{label: Detections}`` with labels in 1..K (boxes 0-based
            continuous xyxy); a missing label means no detections.
        dataset: the split the detections are for; ``classes[0]`` must be the
            background.
        config: the settings (:class:`DiagnosisConfig`; defaults if None).

    Returns:
        A :class:`Diagnosis`; ``.to_json()`` gives a JSON-ready summary and
        ``.table()`` a printable one.

    Raises:
        ValueError: a label outside 1..K, a detection on an image not in the
            dataset, or a similarity group naming a class the dataset lacks.
    """
    config = DiagnosisConfig() if config is None else config
    classes = check_per_class(per_class, dataset)
    index = {name: k for k, name in enumerate(classes) if k > 0}
    similar: dict[int, set[int]] = {k: set() for k in index.values()}
    for group in config.groups:
        unknown = [name for name in group if name not in index]
        if unknown:
            raise ValueError(f"similarity group {','.join(group)!r} names {', '.join(map(repr, unknown))}, which "
                             f"the dataset does not have (its classes: {', '.join(classes[1:])})")
        labels = {index[name] for name in group}
        for k in labels:
            similar[k] |= labels - {k}
    objects = _Objects.of(dataset.images)
    counts = [int(((objects.labels == k) & ~objects.difficult).sum()) for k in range(1, len(classes))]
    if config.normalized_count is not None:
        n = float(config.normalized_count)
    else:
        with_objects = [c for c in counts if c > 0]
        n = sum(with_objects) / len(with_objects) if with_objects else 1.0
    results, sequences = {}, []
    for k in range(1, len(classes)):
        result, sequence = _diagnose_class(per_class.get(k, Detections.empty()), objects, k, classes[k],
                                           frozenset(similar[k]), config, n)
        results[k] = result
        sequences.append(sequence)
    curve, breakdown = _pooled(sequences, config)
    return Diagnosis(config, n, {k: classes[k] for k in range(1, len(classes))}, results, curve, breakdown)


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class AnalysisOutputs:
    """What :func:`analyze_results_folder` computed and wrote.

    Attributes:
        diagnosis: the analysis.
        json_path: the JSON summary (``Diagnosis.to_json``).
        fp_plot: the false-positive type plot (PNG).
        size_plot: the AP-by-size bar chart (PNG).
        drawings: the worst false positives drawn on their images (PNGs).
        skipped: images that could not be drawn, and why.
    """

    diagnosis: Diagnosis
    json_path: Path
    fp_plot: Path
    size_plot: Path
    drawings: tuple[Path, ...]
    skipped: tuple[str, ...]


def analyze_results_folder(
    dataset: DetectionDataset,
    results: str | os.PathLike,
    out: str | os.PathLike,
    config: DiagnosisConfig | None = None,
    prefix: str = "comp4",
) -> AnalysisOutputs:
    """``sppnet analyze`` as a library call: read a VOC results folder
    (``<results>/<prefix>_det_<split>_<class>.txt``, as ``sppnet eval detect``
    writes it), analyse it against ``dataset`` and write into ``out``:

    - ``diagnosis.json``: the summary (written atomically);
    - ``fp_types.png``: false-positive types vs the number of top false
      positives, overall and per class, with the recall;
    - ``size_ap.png``: AP (and normalised AP) per object size bin;
    - ``worst_fp/<class>/<nn>_<type>_<image id>.png``: each class's
      ``config.top_fp`` highest-scored false positives on their images (red),
      with the object that explains the error (green).

    Raises:
        FileNotFoundError: no results file in ``results``.
        ValueError: as :func:`diagnose_detections`, or a malformed results file.
    """
    from sppnet.evaluation.plots import draw_false_positives, plot_false_positive_types, plot_size_ap
    from sppnet.evaluation.results import read_voc_results

    per_class = read_voc_results(results, dataset.classes, dataset.split, prefix)
    diagnosis = diagnose_detections(per_class, dataset, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "diagnosis.json"
    atomic_write_text(json_path, json.dumps(diagnosis.to_json(), indent=2) + "\n")
    fp_plot = plot_false_positive_types(diagnosis, out / "fp_types.png")
    size_plot = plot_size_ap(diagnosis, out / "size_ap.png")
    drawings, skipped = draw_false_positives(diagnosis, dataset, out / "worst_fp")
    return AnalysisOutputs(diagnosis, json_path, fp_plot, size_plot, tuple(drawings), tuple(skipped))
