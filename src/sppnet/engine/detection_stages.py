"""Stages shared by the detectors: proposals, window labels, per-class SVMs
with hard-negative mining, box regression, per-class NMS, whole-dataset
testing (SPEC sections 4, 5 and 7).

SPP-net and R-CNN differ only in how a window becomes features: SPP-net pools
it from the image's cached conv maps, R-CNN warps it and runs the whole
network. Both hand these stages a ``WindowFeatures`` function
``(record, boxes (R, 4)) -> (pool5 (R, D5), fc7 (R, D7))``.

Shapes: R windows of an image, K object classes (+1 background).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from sppnet.data.images import ImageError
from sppnet.proposals import CachedProposals, ProposalConfig, stream_proposals
from sppnet.data.records import DetectionDataset, ImageRecord
from sppnet.engine import distributed
from sppnet.evaluation.voc import Detections
from sppnet.fast_path import check_precision
from sppnet.models.box_regression import BoxRegressorConfig, BoxRegressors, fit_box_regressors
from sppnet.models.scoring import check_scorer
from sppnet.models.svm import HardNegativeMiner, LinearSVMs, SVMConfig, feature_scale
from sppnet.models.windows import LabelledWindows, label_windows
from sppnet.ops import batched_nms, fuse_detections
from sppnet.timing import StageTimer

__all__ = [
    "MiningConfig", "TestConfig", "WindowFeatures", "RunDetector", "StagedRunDetector", "check_svm_scorer",
    "dataset_proposals", "label_dataset",
    "train_svms", "train_box_regression", "detect_dataset",
]

WindowFeatures = Callable[[ImageRecord, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class MiningConfig:
    negative_overlap: float = 0.3  # SVM negatives: IoU below this with every box of the class
    retrain_after: int = 2000  # retrain when more new negatives have arrived
    hard_threshold: float = -1.0001  # keep negatives scoring above this
    evict_threshold: float = -1.2  # after a retrain drop cached negatives scoring below this
    feature_norm: float = 20.0  # fc7 rows scaled to this mean L2 norm


@dataclass(frozen=True)
class TestConfig:
    nms: float = 0.3
    top_k: int = 100  # detections per class per image
    box_regression: bool = True
    precision: str = "fp32"  # "bf16": the CPU fast path (bfloat16 autocast, channels-last convs)
    # SPP-net and R-CNN: "svm" (the papers' per-class SVMs) or "softmax" (the
    # fine-tuned fc8); None = "svm". Fast R-CNN has the softmax only.
    scorer: str | None = None
    # Flip testing: each window is also scored in the mirrored image; the two
    # scores are averaged before NMS and the two regressed boxes after it.
    flip: bool = False
    # Gaussian soft-NMS (Bodla et al. 2017): instead of removing the windows
    # that overlap a kept one by more than nms, their scores are multiplied by
    # exp(-IoU^2 / nms_sigma). None: NMS at nms.
    nms_sigma: float | None = None
    # Box voting (Gidaris & Komodakis 2015): each kept detection's box becomes
    # the score-weighted mean of its class's scored (and regressed) windows
    # that overlap it at IoU >= box_vote (the paper: 0.5). None: off. Without
    # box regression the windows vote as proposed.
    box_vote: float | None = None
    # SPP-net and R-CNN: every window regressed by every class before NMS,
    # which then compares each class's regressed boxes (Fast R-CNN's order),
    # instead of NMS over the proposals and regression of the kept ones (the
    # SPP-net paper's order).
    regress_first: bool = False
    # SPP-net and R-CNN: iterative localisation, one step (Gidaris & Komodakis
    # 2015): each class's `refine` best-scored windows are regressed by its
    # regressor and scored again, and join the windows before NMS. 0: off.
    refine: int = 0

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.nms_sigma is not None and not self.nms_sigma > 0:
            raise ValueError(f"test.nms_sigma must be > 0 or null, got {self.nms_sigma}")
        if self.box_vote is not None and not 0 < self.box_vote <= 1:
            raise ValueError(f"test.box_vote must be an IoU in (0, 1] or null, got {self.box_vote}")
        if self.scorer is not None:
            check_scorer(self.scorer)
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or self.refine < 0:
            raise ValueError(f"test.refine must be an int >= 0, got {self.refine!r}")


# Fewer images than this are searched in the process itself: a worker pool's
# start (~2 s of imports per worker) costs more than it saves.
_MIN_IMAGES_FOR_WORKERS = 32
_MAX_PROPOSAL_WORKERS = 8  # each worker imports torch (~300 MB)


def proposal_workers(images: int) -> int:
    """Processes for computing a dataset's proposals: as many as torch's
    threads (the CPU budget the process was given; the test suite gives 1),
    at most 8, one in a process group (each rank computes its shard) or for
    fewer than 32 images. Selective search runs on one core per image, so on
    2 cores two workers compute 300 images in 68 s instead of 123 s
    (benchmarks/RESULTS.md, "Training speed")."""
    if distributed.world() > 1 or images < _MIN_IMAGES_FOR_WORKERS:
        return 1
    return max(1, min(_MAX_PROPOSAL_WORKERS, torch.get_num_threads()))


def dataset_proposals(dataset: DetectionDataset, config: ProposalConfig, data_root: Path, log=print) -> CachedProposals:
    """Proposals of every readable image (cached under ``data_root/proposals``),
    as a read-only mapping image id -> ``Tensor[P, 4]`` that reads each image's
    boxes from the cache when asked (:class:`CachedProposals`).

    Streams: the images are computed (or found in the cache) a chunk at a
    time and only their ids are kept, so memory does not grow with the number
    of images times their boxes.

    In a process group (torchrun) the work is sharded: rank r computes and
    caches the images r, r + N, ..., all ranks wait at a barrier, then each
    checks the whole set in the cache (every rank gets every image's boxes)."""
    cache = Path(data_root) / "proposals"
    computed_by_shards = 0
    if distributed.world() > 1:
        first = {}
        for record in dataset.images:  # an id listed twice is computed once
            first.setdefault(record.image_id, record)
        part, _ = stream_proposals(distributed.shard(list(first.values())), config, cache)
        distributed.barrier()
        computed_by_shards = sum(distributed.gather_objects(part.computed))
    run, kept = stream_proposals(dataset.images, config, cache, proposal_workers(len(dataset.images)))
    for item in run.skipped:
        log(f"skipped: {item}")
    computed, reused = run.computed + computed_by_shards, run.reused - computed_by_shards
    log(f"proposals ({config.method}) for {dataset.split}: {computed} computed, {reused} reused"
        + (f" ({distributed.world()} processes)" if distributed.world() > 1 else ""))
    return CachedProposals(kept, config, cache)


def label_dataset(dataset: DetectionDataset, proposals: dict[str, torch.Tensor], fg_threshold: float = 0.5,
                  bg_range: tuple[float, float] = (0.1, 0.5)) -> dict[str, LabelledWindows]:
    """Ground truth + proposals of every image with proposals, labelled."""
    return {
        record.image_id: label_windows(proposals[record.image_id], record.boxes, record.labels, dataset.num_classes,
                                       fg_threshold, bg_range, record.difficult)
        for record in dataset.images if record.image_id in proposals
    }


@torch.no_grad()
def train_svms(features: WindowFeatures, records: Sequence[ImageRecord], windows: dict[str, LabelledWindows],
               svm: SVMConfig, mining: MiningConfig, num_classes: int, log=print) -> tuple[LinearSVMs, float]:
    """One linear SVM per object class on fc7 scaled to mean norm
    ``mining.feature_norm``; positives are the ground-truth boxes, negatives
    the windows with IoU < ``mining.negative_overlap`` with every box of the
    class, mined hard in one pass over the images. Returns the SVMs and the
    feature scale (applied at test time too)."""
    records = [r for r in records if r.image_id in windows]
    # The feature scale comes from a sample of windows, then stays fixed (train and test).
    sample = [features(record, windows[record.image_id].boxes[:200])[1] for record in records[: min(len(records), 20)]]
    scale = feature_scale(torch.cat(sample), mining.feature_norm)
    dim = sample[0].shape[1]
    positives = [[] for _ in range(num_classes - 1)]
    for record in records:
        labelled = windows[record.image_id]
        gt = labelled.is_gt & (labelled.labels > 0)
        if bool(gt.any()):
            fc7 = features(record, labelled.boxes[gt])[1] * scale
            for row, label in zip(fc7, labelled.labels[gt].tolist()):
                positives[label - 1].append(row)
    positives = [torch.stack(p) if p else torch.zeros(0, dim) for p in positives]
    miner = HardNegativeMiner(svm, dim, num_classes - 1, positives, retrain_after=mining.retrain_after,
                              hard_threshold=mining.hard_threshold, evict_threshold=mining.evict_threshold)
    for record in records:
        labelled = windows[record.image_id]
        fc7 = features(record, labelled.boxes)[1] * scale
        miner.add_image(fc7, labelled.class_overlaps[:, 1:] < mining.negative_overlap)
    svms = miner.finish()
    log(f"  SVMs: retrains per class {miner.retrains.tolist()}; positives per class {[len(p) for p in positives]}")
    return svms, scale


@torch.no_grad()
def train_box_regression(features: WindowFeatures, records: Sequence[ImageRecord], windows: dict[str, LabelledWindows],
                         config: BoxRegressorConfig, num_classes: int) -> BoxRegressors:
    """Class-specific ridge regression from pool5 to the box deltas of the
    windows overlapping a ground truth by more than ``config.min_overlap``."""
    pool5, boxes, targets, labels, overlaps = [], [], [], [], []
    for record in records:
        if record.image_id not in windows or len(record.boxes) == 0:
            continue
        labelled = windows[record.image_id]
        chosen = (labelled.overlaps > config.min_overlap) & (labelled.labels > 0)
        if not bool(chosen.any()):
            continue
        pool5.append(features(record, labelled.boxes[chosen])[0])
        boxes.append(labelled.boxes[chosen])
        targets.append(record.boxes[labelled.gt_index[chosen]])
        labels.append(labelled.labels[chosen])
        overlaps.append(labelled.overlaps[chosen])
    if not pool5:
        return BoxRegressors(torch.zeros(num_classes, 1, 4), 1.0)
    pool5 = torch.cat(pool5)
    scale = feature_scale(pool5, config.feature_norm)
    return fit_box_regressors(pool5, torch.cat(boxes), torch.cat(targets), torch.cat(labels), torch.cat(overlaps),
                              num_classes, config, scale)


@dataclass
class RunDetector:
    """A trained run's model behind ``detect_dataset``'s interface (the
    ``Detector`` protocol): what the three methods' run adapters share. The
    model carries the precision and the stage timer; the run's config the
    proposal and test settings."""

    model: torch.nn.Module
    config: Any  # the method's config: its proposal fields and ``test``
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.set_precision(self.config.test.precision)
        self.set_flip(self.config.test.flip)
        self.model.nms_sigma = self.config.test.nms_sigma
        self.model.box_vote = self.config.test.box_vote
        if hasattr(self.model, "regress_first"):  # Fast R-CNN regresses before its NMS anyway
            self.model.regress_first = self.config.test.regress_first
        self.set_refine(self.config.test.refine)

    def set_precision(self, precision: str) -> None:
        self.model.set_precision(precision)

    def set_flip(self, flip: bool) -> None:
        """Flip testing on or off (``TestConfig.flip``)."""
        self.model.flip = bool(flip)

    def set_box_vote(self, iou: float | None) -> None:
        """Box voting at this IoU, or off (None) (``TestConfig.box_vote``)."""
        self.model.box_vote = replace(self.config.test, box_vote=iou).box_vote  # TestConfig checks the range

    def set_refine(self, windows: int) -> None:
        """Iterative localisation with ``windows`` per class, or off (0) (``TestConfig.refine``)."""
        windows = replace(self.config.test, refine=windows).refine  # TestConfig checks the value
        if windows and not hasattr(self.model, "refine"):
            raise ValueError(f"test.refine is SPP-net's and R-CNN's (their separately trained regressors' "
                             f"windows scored again); {type(self.model).__name__} has no such step: set it to 0")
        if hasattr(self.model, "refine"):
            self.model.refine = windows

    @property
    def timer(self) -> StageTimer | None:
        return self.model.timer

    @timer.setter
    def timer(self, value: StageTimer | None) -> None:
        self.model.timer = value

    @property
    def proposal_config(self) -> ProposalConfig:
        return self.config.proposal_config

    @property
    def test(self) -> TestConfig:
        return self.config.test


@dataclass
class StagedRunDetector(RunDetector):
    """A run trained in stages (SPP-net, R-CNN): its windows are scored by the
    SVMs or the fine-tuned fc8's softmax (``set_scorer``; the config's
    ``test.scorer`` by default), and training records each stage's seconds."""

    stage_seconds: dict[str, float] = field(default_factory=dict)  # training time per stage (this process)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.set_scorer(self.config.test.scorer or "svm")

    def set_scorer(self, scorer: str) -> None:
        """``"svm"`` (a run that trained its SVMs) or ``"softmax"`` (the fine-tuned fc8)."""
        if check_scorer(scorer) == "svm" and not self.config.svm.train:
            raise ValueError("this run trained no SVMs (svm.train: false): score it with the fine-tuned softmax "
                             "(--scorer softmax), or train a run with --set svm.train=true")
        self.model.scorer = scorer


def check_svm_scorer(config) -> None:
    """An SPP-net or R-CNN config that skips the SVMs (``svm.train: false``)
    must score with the softmax: say so when the config is made, not at test time."""
    if not config.svm.train and config.test.scorer != "softmax":
        raise ValueError(f"svm.train is false, so test.scorer must be softmax (got {config.test.scorer!r}; "
                         "null means the SVMs)")


class Detector(Protocol):
    proposal_config: ProposalConfig
    test: TestConfig

    def detect(self, record: ImageRecord, proposals: torch.Tensor, box_regression: bool | None = None) -> dict: ...


# detect_dataset joins each class's per-image detections into one tensor every this many images.
_DETECTION_BLOCK = 64


def detect_dataset(detectors: Sequence[Detector], dataset: DetectionDataset, data_root: Path, log=print,
                   box_regression: bool | None = None, combine_by: str = "nms") -> tuple[dict[int, Detections], float]:
    """Detections of every image, per class (for evaluation), and seconds per
    image. Several detectors are combined by NMS over the union of their
    detections (``combine_by="nms"``: SPEC section 5, the paper's model
    combination) or by fusing the detections they share (``"fusion"``:
    ``fuse_detections``, weighted box fusion); the first detector's
    proposals are used by all.

    Streams over the images: each image's proposals are read from the cache
    when it is detected, and only its detections are kept (the evaluation
    needs all of them)."""
    if combine_by not in ("nms", "fusion"):
        raise ValueError(f"combine_by must be 'nms' or 'fusion', got {combine_by!r}")
    first = detectors[0]
    proposals = dataset_proposals(dataset, first.proposal_config, data_root, log)  # read from disk image by image
    per_class: dict[int, tuple[list, list, list]] = {c: ([], [], []) for c in range(1, dataset.num_classes)}
    blocks, since = 0, 0  # every class's lists: `blocks` joined tensors, then one tensor per image of `since`
    started = time.perf_counter()
    for record in dataset.images:
        if record.image_id not in proposals:
            continue
        try:
            outputs = [d.detect(record, proposals[record.image_id], box_regression) for d in detectors]
        except ImageError as error:
            log(f"skipped: {error}")
            continue
        boxes = torch.cat([o["boxes"] for o in outputs])
        labels = torch.cat([o["labels"] for o in outputs])
        scores = torch.cat([o["scores"] for o in outputs])
        if len(detectors) > 1 and combine_by == "fusion":
            boxes, labels, scores = fuse_detections([o["boxes"] for o in outputs], [o["scores"] for o in outputs],
                                                    [o["labels"] for o in outputs])
        elif len(detectors) > 1:
            keep = batched_nms(boxes, scores, labels, first.test.nms)
            boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
        for label in range(1, dataset.num_classes):
            chosen = labels == label
            ids, score_list, box_list = per_class[label]
            ids.extend([record.image_id] * int(chosen.sum()))
            score_list.append(scores[chosen])
            box_list.append(boxes[chosen])
        since += 1
        if since == _DETECTION_BLOCK:  # one tensor per block of images, not one (plus its overhead) per image
            for _, score_list, box_list in per_class.values():
                score_list[blocks:] = [torch.cat(score_list[blocks:])]
                box_list[blocks:] = [torch.cat(box_list[blocks:])]
            blocks, since = blocks + 1, 0
    seconds = (time.perf_counter() - started) / max(len(dataset.images), 1)
    result = {label: Detections(ids, torch.cat(s) if s else torch.zeros(0), torch.cat(b) if b else torch.zeros(0, 4))
              for label, (ids, s, b) in per_class.items()}
    return result, seconds
