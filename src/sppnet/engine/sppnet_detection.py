"""SPP-net detection, trained in stages (SPEC sections 3-5).

Shapes: R windows of an image, K object classes (+1 background), C trunk
channels, B pyramid bins, H fc width.

Stages, each written to the run folder and skipped on ``--resume`` when done:

0. ``pretrain/``: without ``--backbone``, an SPP classifier is first trained
   on the training set's ground-truth crops and background crops (an image
   folder written to ``pretrain-data/``), since no ImageNet weights can be
   downloaded. Its conv layers are the detector's and are never updated
   again; its fc6 and fc7 initialise the detector's.
1. proposals (cached by ``sppnet.data.proposals``) and conv5 maps of every
   image at every scale and of its mirror (``features/``, the feature cache).
2. ``finetune.safetensors``: fc6, fc7 and a new (K+1)-way fc8 fine-tuned on
   windows pooled from the cached maps: foreground IoU >= 0.5, background IoU
   in [0.1, 0.5), 25% foreground per mini-batch of 128 drawn across images,
   mirrored windows too.
3. ``svm.safetensors``: one linear SVM per class on fc7 features scaled to
   mean norm 20; positives are the ground-truth boxes, negatives windows with
   IoU < 0.3 with every box of the class, mined hard in one pass.
4. ``bbox.safetensors``: class-specific ridge box regression on pool5.

Testing scores every proposal with every SVM, keeps the top 100 per class
after NMS at 0.3, regresses the kept boxes and clips them to the image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn
from torch.nn import functional as F

from sppnet.config import from_dict, load_config, to_dict
from sppnet.data.images import ImageError, load_image
from sppnet.data.proposals import ProposalConfig, compute_proposals
from sppnet.data.records import DetectionDataset, ImageRecord
from sppnet.engine.checkpoint import load_weights, save_weights
from sppnet.engine.classification import ClassifyConfig, train_classifier
from sppnet.engine.feature_cache import FeatureCache
from sppnet.evaluation.classification import load_classifier
from sppnet.evaluation.voc import Detections
from sppnet.models.box_regression import BoxRegressorConfig, BoxRegressors, fit_box_regressors
from sppnet.models.svm import HardNegativeMiner, LinearSVMs, SVMConfig, feature_scale
from sppnet.models.windows import label_windows, pool_windows
from sppnet.ops import batched_nms, box_iou, clip_boxes

__all__ = ["SPPNetConfig", "SPPNetDetector", "train_sppnet", "load_sppnet", "detect_dataset", "dataset_proposals"]


@dataclass(frozen=True)
class PretrainConfig:
    preset: str = "classify-tiny"  # classifier preset used to pre-train the trunk
    epochs: int | None = None  # None: the preset's
    background_per_image: int = 2  # background crops (IoU < 0.3 with every object) per image
    min_crop: int = 8  # ground-truth boxes smaller than this are not used as crops


@dataclass(frozen=True)
class FinetuneConfig:
    iterations: int = 2000
    batch_size: int = 128  # windows per mini-batch
    images_per_batch: int = 8  # images the windows of one mini-batch are drawn from
    fg_fraction: float = 0.25
    fg_threshold: float = 0.5
    bg_low: float = 0.1
    bg_high: float = 0.5
    lr: float = 0.001
    lr_steps: tuple[int, ...] = (1000, 1500)  # iterations after which lr /= 10 (code: 1e-3, 1e-4, 1e-5)
    momentum: float = 0.9
    weight_decay: float = 0.0005
    flip: bool = True  # also pool windows from the mirrored image's maps
    seed: int = 0


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


@dataclass(frozen=True)
class SPPNetConfig:
    scales: tuple[int, ...] = (688,)  # shorter side of each scale; paper multi-scale: 480, 576, 688, 864, 1200
    max_side: int | None = None
    window_target: float = 224.0  # per window, the scale whose rescaled area is closest to this squared
    proposals: str = "selective-search-fast"  # or selective-search-quality | edge-boxes | grid
    max_proposals: int = 2000
    proposal_resize: int | None = 500  # shorter side images are searched at; None = native size
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    bbox: BoxRegressorConfig = field(default_factory=BoxRegressorConfig)
    test: TestConfig = field(default_factory=TestConfig)


class SPPNetHead(nn.Module):
    """fc6 -> fc7 (-> fc8 while fine-tuning) on pooled windows ``(R, C * B)``."""

    def __init__(self, fc6: nn.Sequential, fc7: nn.Sequential, num_classes: int) -> None:
        super().__init__()
        self.fc6, self.fc7 = fc6, fc7
        self.fc8 = nn.Linear(fc7[0].out_features, num_classes)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def features(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc7(self.fc6(pooled))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.features(pooled))


@dataclass
class SPPNetDetector:
    """Everything testing needs: the cached-feature trunk, levels, head, SVMs, regressors."""

    cache: FeatureCache
    levels: tuple[int, ...]
    head: SPPNetHead
    svms: LinearSVMs
    svm_scale: float
    regressors: BoxRegressors | None
    config: SPPNetConfig
    classes: tuple[str, ...]
    stage_seconds: dict[str, float] = field(default_factory=dict)  # training time per stage (this process)

    @torch.no_grad()
    def detect(self, record: ImageRecord, proposals: torch.Tensor, box_regression: bool | None = None) -> dict:
        """``{"boxes" (D, 4), "labels" (D,), "scores" (D,)}`` for one image."""
        maps = self.cache.load(record)
        boxes = proposals.float().reshape(-1, 4)
        if len(boxes) == 0:
            return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
        geometry = self.cache.trunk.geometry
        pooled = pool_windows(maps, boxes, geometry, self.levels, target=self.config.window_target)
        self.head.eval()
        scores = self.svms.decision_function(self.head.features(pooled) * self.svm_scale)  # (R, K)
        num_classes = scores.shape[1]
        all_boxes = boxes.repeat_interleave(num_classes, 0)
        all_labels = torch.arange(1, num_classes + 1).repeat(len(boxes))
        all_scores = scores.reshape(-1)
        keep = batched_nms(all_boxes, all_scores, all_labels, self.config.test.nms)
        keep = torch.cat([keep[all_labels[keep] == c][: self.config.test.top_k] for c in range(1, num_classes + 1)])
        window = keep // num_classes
        out_boxes, out_labels, out_scores = all_boxes[keep], all_labels[keep], all_scores[keep]
        use_regression = self.config.test.box_regression if box_regression is None else box_regression
        if use_regression and self.regressors is not None:
            out_boxes = self.regressors.apply(pooled[window], out_boxes, out_labels)
        out_boxes = clip_boxes(out_boxes, (record.height, record.width))
        return {"boxes": out_boxes, "labels": out_labels, "scores": out_scores}


def _write_pretrain_crops(dataset: DetectionDataset, out: Path, config: PretrainConfig, seed: int) -> None:
    """An image folder of ground-truth crops (by class) and background crops."""
    generator = torch.Generator().manual_seed(seed)
    for record in dataset.images:
        try:
            image = load_image(record.image_path)
        except ImageError:
            continue
        height, width = image.shape[:2]
        for index, (box, label) in enumerate(zip(record.boxes.tolist(), record.labels.tolist())):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            if min(x2 - x1, y2 - y1) < config.min_crop:
                continue
            path = out / dataset.classes[label] / f"{record.image_id}_{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[y1:y2, x1:x2]).save(path)
        made, tries = 0, 0
        while made < config.background_per_image and tries < 50:
            tries += 1
            side = int(torch.randint(24, max(25, min(height, width)), (1,), generator=generator))
            x = int(torch.randint(0, width - side + 1, (1,), generator=generator))
            y = int(torch.randint(0, height - side + 1, (1,), generator=generator))
            crop_box = torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32)
            if len(record.boxes) and float(box_iou(crop_box, record.boxes).max()) >= 0.3:
                continue
            path = out / dataset.classes[0] / f"{record.image_id}_bg{made}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[y : y + side, x : x + side]).save(path)
            made += 1


def _stage_pretrain(config: SPPNetConfig, train: DetectionDataset, run_dir: Path, backbone: Path | None, log) -> Path:
    if backbone is not None:
        return backbone
    classifier_run = run_dir / "pretrain"
    if (classifier_run / "model.safetensors").is_file():
        return classifier_run
    log("no --backbone given: pre-training the trunk as an SPP classifier on ground-truth and background crops")
    crops = run_dir / "pretrain-data"
    if not (crops / "train").is_dir():
        _write_pretrain_crops(train, crops / "train", config.pretrain, config.finetune.seed)
    overrides = ["train.val_split=null"] + ([f"train.epochs={config.pretrain.epochs}"] if config.pretrain.epochs else [])
    classify = load_config(ClassifyConfig, config.pretrain.preset, overrides)
    train_classifier(classify, crops, classifier_run, resume=(classifier_run / "checkpoint.safetensors").is_file(), progress=False,
                     log=lambda message: log(f"  pretrain: {message}"))
    return classifier_run


def dataset_proposals(dataset: DetectionDataset, config: SPPNetConfig, data_root: Path, log) -> dict[str, torch.Tensor]:
    proposal_config = ProposalConfig(method=config.proposals, max_proposals=config.max_proposals,
                                     resize_to=config.proposal_resize)
    run = compute_proposals(dataset.images, proposal_config, data_root / "proposals", progress=False)
    for item in run.skipped:
        log(f"skipped: {item}")
    log(f"proposals ({config.proposals}) for {dataset.split}: {run.computed} computed, {run.reused} reused")
    return run.boxes


def _finetune(head: SPPNetHead, cache: FeatureCache, levels, train: DetectionDataset, windows: dict, config: SPPNetConfig, log):
    tune = config.finetune
    generator = torch.Generator().manual_seed(tune.seed)
    torch.manual_seed(tune.seed)
    optimizer = torch.optim.SGD(head.parameters(), lr=tune.lr, momentum=tune.momentum, weight_decay=tune.weight_decay)
    records = [r for r in train.images if r.image_id in windows]
    per_image = max(1, tune.batch_size // tune.images_per_batch)
    fg_per_image = max(1, round(per_image * tune.fg_fraction))
    geometry = cache.trunk.geometry
    head.train()
    started, losses = time.perf_counter(), []
    for iteration in range(tune.iterations):
        lr = tune.lr * 0.1 ** sum(iteration >= step for step in tune.lr_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        chosen = torch.randperm(len(records), generator=generator)[: tune.images_per_batch].tolist()
        pooled, labels = [], []
        for index in chosen:
            record = records[index]
            labelled = windows[record.image_id]
            fg = (labelled.labels > 0).nonzero().flatten()
            bg = (labelled.labels == 0).nonzero().flatten()
            fg = fg[torch.randperm(len(fg), generator=generator)[:fg_per_image]]
            bg = bg[torch.randperm(len(bg), generator=generator)[: per_image - len(fg)]]
            picked = torch.cat([fg, bg])
            if len(picked) == 0:
                continue
            flipped = tune.flip and bool(torch.rand(1, generator=generator) < 0.5)
            maps = cache.load(record, flipped=flipped)
            pooled.append(pool_windows(maps, labelled.boxes[picked], geometry, levels, target=config.window_target,
                                       flipped=flipped, image_width=record.width))
            labels.append(labelled.labels[picked])
        if not pooled:
            continue
        loss = F.cross_entropy(head(torch.cat(pooled)), torch.cat(labels))
        if not torch.isfinite(loss):
            raise ValueError(f"fine-tuning diverged at iteration {iteration} (loss {loss.item()}); lower finetune.lr")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (iteration + 1) % max(1, tune.iterations // 10) == 0:
            log(f"  fine-tune {iteration + 1}/{tune.iterations}: loss {np.mean(losses[-50:]):.3f}, lr {lr:g} "
                f"({time.perf_counter() - started:.0f} s)")
    head.eval()


@torch.no_grad()
def _image_features(head, cache, levels, record, boxes, config):
    pooled = pool_windows(cache.load(record), boxes, cache.trunk.geometry, levels, target=config.window_target)
    return pooled, head.features(pooled)


@torch.no_grad()
def _train_svms(head, cache, levels, train, windows, config: SPPNetConfig, num_classes: int, log) -> tuple[LinearSVMs, float]:
    mining = config.mining
    records = [r for r in train.images if r.image_id in windows]
    # The feature scale comes from a sample of windows, then stays fixed (train and test).
    sample = []
    for record in records[: min(len(records), 20)]:
        sample.append(_image_features(head, cache, levels, record, windows[record.image_id].boxes[:200], config)[1])
    scale = feature_scale(torch.cat(sample), mining.feature_norm)
    positives = [[] for _ in range(num_classes - 1)]
    for record in records:
        labelled = windows[record.image_id]
        gt = labelled.is_gt & (labelled.labels > 0)
        if bool(gt.any()):
            fc7 = _image_features(head, cache, levels, record, labelled.boxes[gt], config)[1] * scale
            for row, label in zip(fc7, labelled.labels[gt].tolist()):
                positives[label - 1].append(row)
    positives = [torch.stack(p) if p else torch.zeros(0, head.fc7[0].out_features) for p in positives]
    miner = HardNegativeMiner(config.svm, head.fc7[0].out_features, num_classes - 1, positives,
                              retrain_after=mining.retrain_after, hard_threshold=mining.hard_threshold,
                              evict_threshold=mining.evict_threshold)
    for record in records:
        labelled = windows[record.image_id]
        fc7 = _image_features(head, cache, levels, record, labelled.boxes, config)[1] * scale
        negative = labelled.class_overlaps[:, 1:] < mining.negative_overlap
        miner.add_image(fc7, negative)
    svms = miner.finish()
    log(f"  SVMs: retrains per class {miner.retrains.tolist()}; positives per class {[len(p) for p in positives]}")
    return svms, scale


@torch.no_grad()
def _train_box_regression(head, cache, levels, train, windows, config: SPPNetConfig, num_classes: int) -> BoxRegressors:
    features, boxes, targets, labels, overlaps = [], [], [], [], []
    for record in train.images:
        if record.image_id not in windows or len(record.boxes) == 0:
            continue
        labelled = windows[record.image_id]
        chosen = (labelled.overlaps > config.bbox.min_overlap) & (labelled.labels > 0)
        if not bool(chosen.any()):
            continue
        pooled = pool_windows(cache.load(record), labelled.boxes[chosen], cache.trunk.geometry, levels,
                              target=config.window_target)
        features.append(pooled)
        boxes.append(labelled.boxes[chosen])
        targets.append(record.boxes[labelled.gt_index[chosen]])
        labels.append(labelled.labels[chosen])
        overlaps.append(labelled.overlaps[chosen])
    if not features:
        return BoxRegressors(torch.zeros(num_classes, 1, 4), 1.0)
    features = torch.cat(features)
    scale = feature_scale(features, config.bbox.feature_norm)
    return fit_box_regressors(features, torch.cat(boxes), torch.cat(targets), torch.cat(labels), torch.cat(overlaps),
                              num_classes, config.bbox, scale)


def _label_all(dataset: DetectionDataset, proposals: dict, config: SPPNetConfig) -> dict:
    tune = config.finetune
    return {
        record.image_id: label_windows(proposals[record.image_id], record.boxes, record.labels, dataset.num_classes,
                                       tune.fg_threshold, (tune.bg_low, tune.bg_high), record.difficult)
        for record in dataset.images if record.image_id in proposals
    }


def train_sppnet(
    config: SPPNetConfig, train: DetectionDataset, data_root: Path, run_dir: Path, backbone: Path | None = None,
    resume: bool = False, log=print,
) -> SPPNetDetector:
    """Run every stage that is not done yet; returns the trained detector."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise ValueError(f"run folder {run_dir} is not empty: pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_config = run_dir / "config.yaml"
    if saved_config.is_file() and from_dict(SPPNetConfig, yaml.safe_load(saved_config.read_text())) != config:
        raise ValueError(f"{saved_config} differs from the given config; resume with the run's own config")
    saved_config.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    (run_dir / "classes.txt").write_text("".join(f"{c}\n" for c in train.classes), encoding="utf-8")

    classifier_run = _stage_pretrain(config, train, run_dir, backbone, log)
    (run_dir / "backbone.txt").write_text(str(Path(classifier_run).resolve()) + "\n", encoding="utf-8")
    classifier, _, _ = load_classifier(classifier_run)
    if not classifier.uses_spp:
        raise ValueError(f"{classifier_run} is a no-SPP classifier; SPP-net detection needs SPP levels")
    levels = classifier.spp.levels
    cache = FeatureCache(run_dir / "features", classifier.trunk, config.scales, config.max_side, flips=config.finetune.flip)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    proposals = dataset_proposals(train, config, data_root, log)
    seconds["proposals"], clock = time.perf_counter() - clock, time.perf_counter()
    filled = cache.fill(train.images, progress=False)
    seconds["conv5 features"], clock = time.perf_counter() - clock, time.perf_counter()
    for item in filled.skipped:
        log(f"skipped: {item}")
    log(f"conv5 maps of {len(train)} training images at scales {config.scales}: {filled.computed} computed, "
        f"{filled.reused} reused ({filled.seconds:.1f} s)")
    unreadable = {item.path for item in filled.skipped}
    readable = {r.image_id for r in train.images if r.image_path not in unreadable}
    windows = {k: v for k, v in _label_all(train, proposals, config).items() if k in readable}

    head = SPPNetHead(classifier.fc6, classifier.fc7, train.num_classes)
    finetuned = run_dir / "finetune.safetensors"
    if finetuned.is_file():
        head.load_state_dict(load_weights(finetuned))
        head.eval()
    else:
        log(f"fine-tuning fc6, fc7, fc8 on pooled windows ({config.finetune.iterations} iterations)")
        _finetune(head, cache, levels, train, windows, config, log)
        save_weights(finetuned, head.state_dict())
    seconds["fine-tuning"], clock = time.perf_counter() - clock, time.perf_counter()
    svm_file = run_dir / "svm.safetensors"
    if svm_file.is_file():
        state = load_weights(svm_file)
        svms, svm_scale = LinearSVMs(state["weight"], state["bias"]), float(state["scale"])
    else:
        log("training per-class SVMs with hard-negative mining")
        svms, svm_scale = _train_svms(head, cache, levels, train, windows, config, train.num_classes, log)
        save_weights(svm_file, {"weight": svms.weight, "bias": svms.bias, "scale": torch.tensor(svm_scale)})
    seconds["SVMs"], clock = time.perf_counter() - clock, time.perf_counter()
    bbox_file = run_dir / "bbox.safetensors"
    if bbox_file.is_file():
        state = load_weights(bbox_file)
        regressors = BoxRegressors(state["weights"], float(state["scale"]))
    else:
        log("training box regressors")
        regressors = _train_box_regression(head, cache, levels, train, windows, config, train.num_classes)
        save_weights(bbox_file, {"weights": regressors.weights, "scale": torch.tensor(regressors.feature_scale)})
    seconds["box regression"] = time.perf_counter() - clock
    log(f"SPP-net training stages done in {time.perf_counter() - started:.0f} s (after pre-training): "
        + ", ".join(f"{stage} {value:.1f} s" for stage, value in seconds.items()))
    return SPPNetDetector(cache, levels, head, svms, svm_scale, regressors, config, train.classes, seconds)


def load_sppnet(run_dir: str | Path) -> SPPNetDetector:
    run_dir = Path(run_dir)
    for name in ("config.yaml", "classes.txt", "backbone.txt", "finetune.safetensors", "svm.safetensors", "bbox.safetensors"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished SPP-net run: {name} is missing")
    config = from_dict(SPPNetConfig, yaml.safe_load((run_dir / "config.yaml").read_text()))
    classes = tuple(line for line in (run_dir / "classes.txt").read_text().splitlines() if line)
    classifier, _, _ = load_classifier((run_dir / "backbone.txt").read_text().strip())
    head = SPPNetHead(classifier.fc6, classifier.fc7, len(classes))
    head.load_state_dict(load_weights(run_dir / "finetune.safetensors"))
    svm = load_weights(run_dir / "svm.safetensors")
    bbox = load_weights(run_dir / "bbox.safetensors")
    cache = FeatureCache(run_dir / "features", classifier.trunk, config.scales, config.max_side, flips=config.finetune.flip)
    return SPPNetDetector(cache, classifier.spp.levels, head.eval(), LinearSVMs(svm["weight"], svm["bias"]),
                          float(svm["scale"]), BoxRegressors(bbox["weights"], float(bbox["scale"])), config, classes)


def detect_dataset(detectors: list[SPPNetDetector], dataset: DetectionDataset, data_root: Path, log=print,
                   box_regression: bool | None = None) -> tuple[dict[int, Detections], float]:
    """Detections of every image, per class (for evaluation), and seconds per
    image. Several detectors are combined by NMS over the union of their
    detections (SPEC section 5, model combination)."""
    first = detectors[0]
    proposals = dataset_proposals(dataset, first.config, data_root, log)
    per_class: dict[int, tuple[list, list, list]] = {c: ([], [], []) for c in range(1, dataset.num_classes)}
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
        if len(detectors) > 1:
            keep = batched_nms(boxes, scores, labels, first.config.test.nms)
            boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
        for label in range(1, dataset.num_classes):
            chosen = labels == label
            ids, score_list, box_list = per_class[label]
            ids.extend([record.image_id] * int(chosen.sum()))
            score_list.append(scores[chosen])
            box_list.append(boxes[chosen])
    seconds = (time.perf_counter() - started) / max(len(dataset.images), 1)
    result = {label: Detections(ids, torch.cat(s) if s else torch.zeros(0), torch.cat(b) if b else torch.zeros(0, 4))
              for label, (ids, s, b) in per_class.items()}
    return result, seconds
