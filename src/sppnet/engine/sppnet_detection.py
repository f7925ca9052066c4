"""SPP-net detection, trained in stages (SPEC sections 3-5).

Shapes: R windows of an image, K object classes (+1 background), C trunk
channels, B pyramid bins, H fc width.

Stages, each written to the run folder and skipped on ``--resume`` when done:

0. ``pretrain/``: without ``--backbone``, an SPP classifier is first trained
   on the training set's ground-truth crops and background crops (an image
   folder written to ``pretrain-data/``), since no ImageNet weights can be
   downloaded. Its conv layers are the detector's and are never updated
   again; its fc6 and fc7 initialise the detector's.
1. proposals (cached by ``sppnet.proposals``) and conv5 maps of every
   image at every scale and of its mirror (``features/``, the feature cache).
2. ``finetune.safetensors``: fc6, fc7 and a new (K+1)-way fc8 fine-tuned on
   windows pooled from the cached maps: foreground IoU >= 0.5, background IoU
   in [0.1, 0.5), 25% foreground per mini-batch of 128 drawn across images,
   mirrored windows too; or, with ``finetune.hard_mining_nms`` (the tiny
   preset), the highest-loss windows of each image (online hard example mining).
   ``finetune-checkpoint.safetensors`` holds its progress every
   ``finetune.checkpoint_every`` iterations (``window_training``).
3. ``svm.safetensors``: one linear SVM per class on fc7 features scaled to
   mean norm 20; positives are the ground-truth boxes, negatives windows with
   IoU < 0.3 with every box of the class, mined hard in one pass.
4. ``bbox.safetensors``: class-specific ridge box regression on pool5.

Testing scores every proposal with every SVM, keeps the top 100 per class
after NMS at 0.3, regresses the kept boxes and clips them to the image.

Under torchrun (``sppnet.engine.distributed``): stage 0 is data-parallel
(DDP, see ``train_classifier``), stage 1 is sharded (rank r computes the
proposals and conv5 maps of the images r, r + N, ..., then every rank reads
the whole caches), and stages 2-4 run on rank 0 alone while the other ranks
wait, then load them from the run folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sppnet.proposals import ProposalSettings
from sppnet.data.records import DetectionDataset, ImageRecord
from sppnet.engine import distributed
from sppnet.engine.checkpoint import load_weights, save_weights
from sppnet.engine.detection_stages import (
    MiningConfig, StagedRunDetector, TestConfig, check_svm_scorer, dataset_proposals, label_dataset,
)
from sppnet.engine.feature_cache import CacheRun, FeatureCache, MapsInMemory
from sppnet.engine.memory_cache import TRAINING_POOLED_BYTES, MemoryCache
from sppnet.engine.pretrain import PretrainConfig, start_detector_run
from sppnet.engine.window_training import (
    WindowFinetuneConfig, finetune_on_windows, load_regressors, read_staged_run, scoring_stages,
)
from sppnet.models.box_regression import BoxRegressorConfig, BoxRegressors
from sppnet.models.detection.postprocess import empty_detections
from sppnet.models.detection.sppnet import SPPNet, SPPNetHead
from sppnet.models.svm import LinearSVMs, SVMConfig
from sppnet.models.windows import CachedMap, pool_windows

__all__ = ["SPPNetConfig", "SPPNetDetector", "train_sppnet", "load_sppnet"]


@dataclass(frozen=True)
class SPPNetConfig(ProposalSettings):
    scales: tuple[int, ...] = (688,)  # shorter side of each scale; paper multi-scale: 480, 576, 688, 864, 1200
    # Scales of the training images' maps (fine-tuning, SVMs, box regression);
    # None: the test scales. Testing may add scales the training never saw.
    train_scales: tuple[int, ...] | None = None
    max_side: int | None = None
    window_target: float = 224.0  # per window, the scale whose rescaled area is closest to this squared
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: WindowFinetuneConfig = field(default_factory=WindowFinetuneConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    bbox: BoxRegressorConfig = field(default_factory=BoxRegressorConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def __post_init__(self) -> None:
        check_svm_scorer(self)


@dataclass
class SPPNetDetector(StagedRunDetector):
    """A trained SPP-net run as ``detect_dataset`` uses it: the model
    (``sppnet.models.detection.SPPNet``) fed with the conv5 maps of the
    run's feature cache, so an image's maps are computed once for all runs
    and tests that share its trunk."""

    model: SPPNet
    config: SPPNetConfig
    cache: FeatureCache = field(kw_only=True)

    def window_features(self, record: ImageRecord, boxes: torch.Tensor,
                        maps: dict[int, CachedMap] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """pool5 ``(R, C * B)`` pooled from the image's maps (default: the
        cached ones) and fc7 ``(R, H)``."""
        return self.model.window_features(self.cache.load(record) if maps is None else maps, boxes)

    def detect(self, record: ImageRecord, proposals: torch.Tensor, box_regression: bool | None = None,
               maps: dict[int, CachedMap] | None = None) -> dict:
        """``{"boxes" (D, 4), "labels" (D,), "scores" (D,)}`` for one image;
        ``maps`` (scale -> map) instead of the cached ones (with flip testing
        the mirror's maps still come from the cache)."""
        boxes = proposals.float().reshape(-1, 4)
        if len(boxes) == 0:
            return empty_detections()
        # Flip testing pools from the mirror's maps too: cached with the others when
        # fine-tuning used mirrored windows, computed now otherwise.
        mirror_maps = None
        if self.model.flip:
            mirror_maps = (self.cache.load(record, flipped=True) if True in self.cache.variants
                           else {scale: m for (scale, _), m in self.cache.compute(record, (True,)).items()})
        maps = self.cache.load(record) if maps is None else maps
        regression = self.test.box_regression if box_regression is None else box_regression
        return self.model.detect_on_maps(maps, boxes, (record.height, record.width), regression, mirror_maps)


def _model(trunk: nn.Module, levels: tuple[int, ...], head: SPPNetHead, svms: LinearSVMs | None, svm_scale: float,
           regressors: BoxRegressors | None, config: SPPNetConfig) -> SPPNet:
    return SPPNet(trunk, levels, head.eval(), svms, svm_scale, regressors, config.scales, config.max_side,
                  config.window_target, config.test.nms, config.test.top_k)


def _finetune(head: SPPNetHead, cache: FeatureCache, levels: tuple[int, ...], train: DetectionDataset, windows: dict,
              config: SPPNetConfig, log=print, checkpoint: Path | None = None) -> None:
    """Fine-tune fc6, fc7 and fc8 on windows pooled from the cached maps.

    The maps never change, and every step pools windows of its images again
    (with hard mining every labelled window of 8 images): each image's and
    mirror's labelled windows are pooled once and kept in float16 (pooling
    picks values of the float16 maps, so they are exact), and a step takes its
    rows; they are pooled again only when dropped from the memory budget."""
    geometry = cache.trunk.geometry
    maps = MapsInMemory(cache)
    records = {record.image_id: record for record in train.images}
    candidates = {image_id: labelled.boxes[labelled.labels >= 0] for image_id, labelled in windows.items()}
    row_of = {image_id: {tuple(box): row for row, box in enumerate(boxes.tolist())}
              for image_id, boxes in candidates.items()}

    def pool(record: ImageRecord, boxes: torch.Tensor, flipped: bool) -> torch.Tensor:
        return pool_windows(maps.load(record, flipped=flipped), boxes, geometry, levels,
                            target=config.window_target, flipped=flipped, image_width=record.width)

    every_window = MemoryCache(lambda key: pool(records[key[0]], candidates[key[0]], key[1]).half(),
                               TRAINING_POOLED_BYTES)

    def pooled_windows(record: ImageRecord, boxes: torch.Tensor, flipped: bool) -> torch.Tensor:
        every = candidates[record.image_id]
        if boxes.shape == every.shape and torch.equal(boxes, every):
            return every_window((record.image_id, flipped)).float()
        rows = row_of[record.image_id]
        try:
            chosen = torch.tensor([rows[tuple(box)] for box in boxes.tolist()], dtype=torch.long)
        except KeyError:  # a window that is not labelled: pooled on its own
            return pool(record, boxes, flipped)
        return every_window((record.image_id, flipped))[chosen].float()

    finetune_on_windows(head, list(head.parameters()), train.images, windows, config.finetune, pooled_windows,
                        checkpoint, log)


def _fill_cache_sharded(cache: FeatureCache, records, progress: bool = False) -> CacheRun:
    """``cache.fill`` with the images shared out over the ranks of a process
    group (rank r: images r, r + N, ...), then a barrier: afterwards every
    rank can read every image's maps. Returns the ranks' runs merged."""
    run = cache.fill(records, shard=(distributed.rank(), distributed.world()), progress=progress)
    distributed.barrier()
    runs = distributed.gather_objects(run)
    return CacheRun(computed=sum(r.computed for r in runs), reused=sum(r.reused for r in runs),
                    recomputed=sum(r.recomputed for r in runs), skipped=[s for r in runs for s in r.skipped],
                    seconds=max(r.seconds for r in runs))


def train_sppnet(
    config: SPPNetConfig, train: DetectionDataset, data_root: Path, run_dir: Path, backbone: Path | None = None,
    resume: bool = False, log=print,
) -> SPPNetDetector:
    """Run every stage that is not done yet; returns the trained detector.

    In a process group (torchrun) every rank calls this with the same
    arguments: pre-training is data-parallel, proposals and conv5 maps are
    computed sharded, and fine-tuning, SVMs and box regression run on rank 0
    while the others wait (each rank returns the finished detector)."""
    run_dir = Path(run_dir)
    log = distributed.main_only(log)
    main = distributed.is_main()
    classifier_run, classifier = start_detector_run(config, train, run_dir, backbone, config.finetune.seed, resume,
                                                    log, data_root)
    if not classifier.uses_spp:
        raise ValueError(f"{classifier_run} is a no-SPP classifier; SPP-net detection needs SPP levels")
    levels = classifier.spp.levels
    train_scales = config.train_scales or config.scales
    cache = FeatureCache(run_dir / "features", classifier.trunk, train_scales, config.max_side, flips=config.finetune.flip)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    proposals = dataset_proposals(train, config.proposal_config, data_root, log)
    seconds["proposals"], clock = time.perf_counter() - clock, time.perf_counter()
    filled = _fill_cache_sharded(cache, train.images)
    seconds["conv5 features"], clock = time.perf_counter() - clock, time.perf_counter()
    for item in filled.skipped:
        log(f"skipped: {item}")
    log(f"conv5 maps of {len(train)} training images at scales {train_scales}: {filled.computed} computed, "
        f"{filled.reused} reused ({filled.seconds:.1f} s"
        + (f", {distributed.world()} processes)" if distributed.world() > 1 else ")"))
    if not main:  # stages 2-4 run on rank 0; wait for them, then read them from the run folder
        distributed.wait_for_main()
        return load_sppnet(run_dir)
    unreadable = {item.path for item in filled.skipped}
    readable = {r.image_id for r in train.images if r.image_path not in unreadable}
    tune = config.finetune
    windows = {k: v for k, v in label_dataset(train, proposals, tune.fg_threshold, (tune.bg_low, tune.bg_high)).items()
               if k in readable}

    torch.manual_seed(tune.seed)  # fc8's initial weights: the same whatever ran before in this process
    head = SPPNetHead(classifier.fc6, classifier.fc7, train.num_classes)
    finetuned = run_dir / "finetune.safetensors"
    if finetuned.is_file():
        head.load_state_dict(load_weights(finetuned))
        head.eval()
    else:
        log(f"fine-tuning fc6, fc7, fc8 on pooled windows ({tune.iterations} iterations)")
        _finetune(head, cache, levels, train, windows, config, log, run_dir / "finetune-checkpoint.safetensors")
        save_weights(finetuned, head.state_dict())
        (run_dir / "finetune-checkpoint.safetensors").unlink(missing_ok=True)
    seconds["fine-tuning"], clock = time.perf_counter() - clock, time.perf_counter()
    detector = SPPNetDetector(_model(classifier.trunk, levels, head, None, 1.0, None, config), config, train.classes,
                              seconds, cache=cache)
    scoring_stages(detector, run_dir, train.images, windows, config, train.num_classes, seconds, log)
    log(f"SPP-net training stages done in {time.perf_counter() - started:.0f} s (after pre-training): "
        + ", ".join(f"{stage} {value:.1f} s" for stage, value in seconds.items()))
    detector.cache = _test_cache(run_dir, classifier.trunk, config)
    distributed.wait_for_main()  # let the other ranks read the finished run
    return detector


def _test_cache(run_dir: Path, trunk: nn.Module, config: SPPNetConfig) -> FeatureCache:
    """The maps testing pools from: ``config.scales`` (entries shared with the training cache)."""
    return FeatureCache(run_dir / "features", trunk, config.scales, config.max_side, flips=config.finetune.flip)


def load_sppnet(run_dir: str | Path) -> SPPNetDetector:
    run_dir = Path(run_dir)
    config, classes, classifier, (svms, svm_scale) = read_staged_run(run_dir, SPPNetConfig, "SPP-net")
    head = SPPNetHead(classifier.fc6, classifier.fc7, len(classes))
    head.load_state_dict(load_weights(run_dir / "finetune.safetensors"))
    model = _model(classifier.trunk, classifier.spp.levels, head, svms, svm_scale,
                   load_regressors(run_dir / "bbox.safetensors"), config)
    return SPPNetDetector(model, config, classes, cache=_test_cache(run_dir, classifier.trunk, config))
