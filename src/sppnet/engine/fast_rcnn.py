"""Training and loading Fast R-CNN (SPEC section 6).

A run folder holds ``config.yaml``, ``classes.txt``, ``backbone.txt`` (the
classifier run whose trunk and fc6/fc7 start the model: ``--backbone``, or
``RUN/pretrain`` trained on the set's crops as for SPP-net, and the SHA-256
of its weights, checked when the run is loaded),
``checkpoint.safetensors`` (model, optimizer, iteration; written every
``train.checkpoint_every`` iterations, atomically) and, when done,
``model.safetensors``; ``log.csv`` has the losses.

Mini-batches are hierarchical: ``images_per_batch`` images (each mirrored
with probability 1/2 and resized to a scale drawn from ``train_scales``),
``rois_per_image`` RoIs sampled from each. The images of iteration i come
from a permutation of the training set drawn from (seed, epoch), and all
randomness of the j-th image of iteration i (mirroring, scale, RoI sampling,
dropout) from (seed, i, j): a resumed run repeats the uninterrupted one
exactly. Each image goes through the network on its own (no padded batch),
and the losses are those of the whole mini-batch: cross-entropy and
smooth-L1 summed over its RoIs and divided by their number.

Data-parallel training (``torchrun --nproc_per_node N -m sppnet train detect
--method fast-rcnn ...``, see ``sppnet.engine.distributed``): rank r takes
the images r, r + N, ... of each iteration, its summed losses are scaled by
N / (RoIs of the whole mini-batch) and DDP averages the gradients, which are
then those of the one-process mini-batch. ``images_per_batch`` stays the
global mini-batch, so the learning rate does not change with N. Proposals are
computed sharded (``dataset_proposals``); rank 0 alone logs and writes
``log.csv``, checkpoints and the final weights.

Conv layers above the first ``frozen_convs`` are fine-tuned with fc6, fc7 and
the two output layers: SGD, momentum 0.9, weight decay 5e-4 on weights only,
biases at twice the learning rate.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import safe_open
from torch import nn

from sppnet.config import from_dict
from sppnet.data.images import ImageError, load_image
from sppnet.proposals import ProposalConfig, ProposalSettings
from sppnet.data.records import DetectionDataset, ImageRecord
from sppnet.engine.checkpoint import (
    Checkpoint, TrainingDiverged, load_checkpoint, load_weights, save_checkpoint, save_weights,
)
from sppnet.engine import distributed
from sppnet.engine.detection_stages import TestConfig, dataset_proposals
from sppnet.engine.pretrain import PretrainConfig, pretrain_backbone
from sppnet.engine.run_folder import open_run_folder, read_classes, record_backbone, recorded_backbone
from sppnet.engine.schedule import step_lr
from sppnet.engine.classification import load_classifier
from sppnet.models.classifier import SPPClassifier
from sppnet.models.fast_rcnn import FAST_RCNN_STDS, FastRCNN, FastRCNNHead, RoISampling, freeze_first_convs
from sppnet.models.svd import compress_fc, compressed_ranks
from sppnet.ops import mirror_boxes

__all__ = ["FastRCNNConfig", "FastRCNNTrainConfig", "FastRCNNDetector", "train_fast_rcnn", "load_fast_rcnn",
           "build_fast_rcnn", "compress_run", "image_tensor"]


@dataclass(frozen=True)
class FastRCNNTrainConfig:
    iterations: int = 40000
    images_per_batch: int = 2
    sampling: RoISampling = field(default_factory=RoISampling)
    lr: float = 0.001
    lr_steps: tuple[int, ...] = (30000,)  # iterations after which lr /= 10
    momentum: float = 0.9
    weight_decay: float = 0.0005
    bias_lr_factor: float = 2.0
    frozen_convs: int = 1  # the first conv layers stay as pre-trained
    box_weight: float = 1.0  # lambda of the multi-task loss
    box_stds: tuple[float, float, float, float] = FAST_RCNN_STDS
    flip: bool = True
    checkpoint_every: int = 500
    seed: int = 0


@dataclass(frozen=True)
class FastRCNNConfig(ProposalSettings):
    scales: tuple[int, ...] = (600,)  # test scales (shorter side); several = multi-scale testing
    train_scales: tuple[int, ...] | None = None  # None: the test scales; several = multi-scale training
    max_side: int | None = 1000
    window_target: float = 224.0  # multi-scale testing: the scale where a RoI's area is closest to this squared
    levels: tuple[int, ...] = (6,)  # RoI pooling: (6,) small nets, (7,) VGG16; SPP levels (6, 3, 2, 1) as an option
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: FastRCNNTrainConfig = field(default_factory=FastRCNNTrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def __post_init__(self) -> None:
        if self.test.scorer not in (None, "softmax"):
            raise ValueError(f"Fast R-CNN scores with its softmax only; test.scorer must be null or softmax, "
                             f"got {self.test.scorer!r}")


def image_tensor(path: Path) -> torch.Tensor:
    """An image file as float ``[3, H, W]`` in [0, 1] (the detectors' input)."""
    return torch.from_numpy(load_image(path)).permute(2, 0, 1).float().div_(255)


def _fc6_for_levels(classifier: SPPClassifier, levels: tuple[int, ...]) -> nn.Sequential:
    """fc6 for RoI pooling ``levels``: the classifier's fc6 restricted to the
    input columns of those levels (the SPP output is level-major), or a fresh
    layer when the classifier never pooled at one of them."""
    fc6 = classifier.fc6
    linear = fc6[0]
    channels = classifier.trunk.out_channels
    source = tuple(classifier.spp.levels)
    if levels == source:
        return fc6
    if not all(level in source for level in levels):
        fresh = nn.Linear(channels * sum(n * n for n in levels), linear.out_features)
        nn.init.kaiming_normal_(fresh.weight, nonlinearity="relu")
        nn.init.zeros_(fresh.bias)
        return nn.Sequential(fresh, *list(fc6)[1:])
    starts = np.cumsum([0] + [channels * n * n for n in source])
    columns = torch.cat([torch.arange(starts[source.index(n)], starts[source.index(n) + 1]) for n in levels])
    restricted = nn.Linear(len(columns), linear.out_features)
    with torch.no_grad():
        restricted.weight.copy_(linear.weight[:, columns])
        restricted.bias.copy_(linear.bias)
    return nn.Sequential(restricted, *list(fc6)[1:])


def build_fast_rcnn(classifier: SPPClassifier, num_classes: int, config: FastRCNNConfig) -> FastRCNN:
    """A Fast R-CNN whose trunk, fc6 and fc7 come from a trained classifier."""
    levels = tuple(config.levels)
    head = FastRCNNHead(_fc6_for_levels(classifier, levels), classifier.fc7, num_classes)
    return FastRCNN(classifier.trunk, head, levels, config.scales, config.max_side, config.train_scales,
                    config.window_target, config.train.sampling, config.train.box_stds, config.train.box_weight,
                    config.test.nms, config.test.top_k)


@dataclass
class FastRCNNDetector:
    """A trained model with what ``detect_dataset`` needs."""

    model: FastRCNN
    config: FastRCNNConfig
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.set_precision(self.config.test.precision)

    def set_precision(self, precision: str) -> None:
        self.model.set_precision(precision)

    @property
    def timer(self):
        return self.model.timer

    @timer.setter
    def timer(self, value) -> None:
        self.model.timer = value

    @property
    def proposal_config(self) -> ProposalConfig:
        return self.config.proposal_config

    @property
    def test(self) -> TestConfig:
        return self.config.test

    @torch.no_grad()
    def detect(self, record: ImageRecord, proposals: torch.Tensor, box_regression: bool | None = None) -> dict:
        use_regression = self.test.box_regression if box_regression is None else box_regression
        self.model.eval()
        return self.model.predict([image_tensor(record.image_path)], [proposals], use_regression)[0]


def _generator(seed: int, *keys: int) -> torch.Generator:
    value = seed
    for key in keys:
        value = (value * 1_000_003 + key) % (2**63)
    return torch.Generator().manual_seed(value)


def _batch_indices(count: int, iteration: int, per_batch: int, seed: int) -> list[int]:
    """Images of one iteration: consecutive positions in a stream of
    per-epoch permutations, so every image is seen once per epoch."""
    positions = range(iteration * per_batch, (iteration + 1) * per_batch)
    indices, cached = [], {}
    for position in positions:
        epoch, offset = divmod(position, count)
        if epoch not in cached:
            cached[epoch] = torch.randperm(count, generator=_generator(seed, 7919, epoch)).tolist()
        indices.append(cached[epoch][offset])
    return indices


def _optimizer(model: FastRCNN, train: FastRCNNTrainConfig) -> torch.optim.SGD:
    weights = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    return torch.optim.SGD([
        {"params": weights, "lr_factor": 1.0, "weight_decay": train.weight_decay},
        {"params": biases, "lr_factor": train.bias_lr_factor, "weight_decay": 0.0},
    ], lr=train.lr, momentum=train.momentum)


class _SummedLosses(nn.Module):
    """The model and its losses as DDP wraps them. ``forward(images, boxes,
    targets, generators, dropout_seeds)`` runs each image through
    ``FastRCNN.losses`` on its own, with its own generator (scale, RoI
    sampling) and dropout seed, and returns the classification and box losses
    summed over the RoIs and the RoI count (a 0-d tensor); with no RoIs, zeros
    that still reach every trainable parameter."""

    def __init__(self, model: FastRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, images, boxes, targets, generators, dropout_seeds):
        classification, box, count = [], [], 0
        for image, proposals, target, generator, seed in zip(images, boxes, targets, generators, dropout_seeds):
            torch.manual_seed(seed)  # dropout
            rois = []
            hook = self.model.head.register_forward_hook(lambda module, inputs, outputs: rois.append(len(outputs[0])))
            try:
                losses = self.model.losses([image], [proposals], [target], generator=generator)
            finally:
                hook.remove()
            if rois[0] == 0:
                continue
            # losses() divides by the image's RoI count: back to sums.
            classification.append(losses["loss_classifier"] * rois[0])
            box.append(losses["loss_box_reg"] * rois[0])
            count += rois[0]
        if count == 0:
            zero = distributed.zero_loss(self.model)
            return zero, zero, torch.zeros(())
        return torch.stack(classification).sum(), torch.stack(box).sum(), torch.tensor(float(count))


def train_fast_rcnn(config: FastRCNNConfig, train: DetectionDataset, data_root: Path, run_dir: Path,
                    backbone: Path | None = None, resume: bool = False, log=print) -> FastRCNNDetector:
    """Train (or continue) a Fast R-CNN run; returns the trained detector.

    In a process group (torchrun) every rank calls this with the same
    arguments; each takes its share of every iteration's images (see the
    module docstring). The learning rate is ``train.lr`` for any number of
    processes: ``images_per_batch`` is the global mini-batch."""
    run_dir = Path(run_dir)
    log = distributed.main_only(log)
    main = distributed.is_main()
    open_run_folder(run_dir, config, resume, train.classes)
    settings = config.train
    classifier_run = pretrain_backbone(config.pretrain, train, run_dir, backbone, settings.seed, log, data_root)
    record_backbone(run_dir, classifier_run)
    classifier, _, _ = load_classifier(classifier_run)
    torch.manual_seed(settings.seed)  # the new output layers' initial weights
    model = build_fast_rcnn(classifier, train.num_classes, config)
    final = run_dir / "model.safetensors"
    if final.is_file():
        model.load_state_dict(load_weights(final))
        return FastRCNNDetector(model.eval(), config, train.classes)

    proposals = dataset_proposals(train, config.proposal_config, data_root, log)
    records = [r for r in train.images if r.image_id in proposals]
    if not records:
        raise ValueError(f"no usable training images in {train.split} (every image was skipped)")
    freeze_first_convs(model.trunk, settings.frozen_convs)
    optimizer = _optimizer(model, settings)
    checkpoint_path = run_dir / "checkpoint.safetensors"
    start = 0
    if resume and checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path)
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        start = int(saved.extra["iteration"])
        log(f"resumed at iteration {start} from {checkpoint_path}")
    log_path = run_dir / "log.csv"
    rows = _read_log(log_path, start)
    summed_losses = distributed.wrap_ddp(_SummedLosses(model))
    summed_losses.train()
    started = time.perf_counter()
    iteration = start
    for iteration in range(start, settings.iterations):
        lr = step_lr(settings.lr, settings.lr_steps, iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        images, boxes, targets, generators, dropout_seeds = [], [], [], [], []
        batch = _batch_indices(len(records), iteration, settings.images_per_batch, settings.seed)
        for position in distributed.shard(range(len(batch))):  # this rank's images of the global mini-batch
            record = records[batch[position]]
            generator = _generator(settings.seed, iteration, position)
            dropout_seed = int(torch.randint(2**62, (1,), generator=generator))
            try:
                image = image_tensor(record.image_path)
            except ImageError as error:
                log(f"skipped: {error}")
                continue
            proposals_i, gt_boxes = proposals[record.image_id].float(), record.boxes.float()
            if settings.flip and bool(torch.rand(1, generator=generator) < 0.5):
                image = image.flip(-1)
                proposals_i, gt_boxes = mirror_boxes(proposals_i, record.width), mirror_boxes(gt_boxes, record.width)
            images.append(image)
            boxes.append(proposals_i)
            targets.append({"boxes": gt_boxes, "labels": record.labels, "difficult": record.difficult})
            generators.append(generator)
            dropout_seeds.append(dropout_seed)
        classification, box, count = summed_losses(images, boxes, targets, generators, dropout_seeds)
        # Sums over the whole mini-batch (all ranks): its RoI count normalises the losses.
        totals = distributed.all_reduce_sum(torch.tensor(
            [float(classification.detach()), float(box.detach()), float(count)], dtype=torch.float64))
        rois = totals[2].item()
        loss_classifier, loss_box = (totals[:2] / max(rois, 1)).tolist()
        if not np.isfinite(loss_classifier + loss_box):
            raise TrainingDiverged(
                f"Fast R-CNN loss became {loss_classifier + loss_box} at iteration {iteration}; stopped. The last good "
                f"checkpoint ({checkpoint_path if checkpoint_path.exists() else 'none yet'}) is kept; lower train.lr")
        optimizer.zero_grad()
        # DDP averages over the N ranks: N / (global RoI count) turns the sums into the mini-batch's losses.
        ((classification + box) * (distributed.world() / max(rois, 1))).backward()
        if rois == 0:
            continue
        optimizer.step()
        rows.append({"iteration": iteration + 1, "lr": lr, "loss_classifier": loss_classifier, "loss_box_reg": loss_box})
        done = iteration + 1
        if main and (done % settings.checkpoint_every == 0 or done == settings.iterations):
            _write_log(log_path, rows)
            save_checkpoint(checkpoint_path, Checkpoint(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                                        extra={"iteration": done}))
        if done % max(1, settings.iterations // 10) == 0:
            recent = rows[-50:]
            log(f"  iteration {done}/{settings.iterations}: loss_cls {np.mean([r['loss_classifier'] for r in recent]):.3f}, "
                f"loss_box {np.mean([r['loss_box_reg'] for r in recent]):.3f}, lr {lr:g} "
                f"({time.perf_counter() - started:.0f} s)")
    if main:
        save_weights(final, model.state_dict())
    distributed.barrier()
    return FastRCNNDetector(model.eval(), config, train.classes)


_LOG_FIELDS = ("iteration", "lr", "loss_classifier", "loss_box_reg")


def _read_log(path: Path, upto: int) -> list[dict]:
    """Rows of an earlier run up to the checkpoint it resumes from."""
    if upto == 0 or not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle) if int(float(row["iteration"])) <= upto]


def _write_log(path: Path, rows: list[dict]) -> None:
    from sppnet.atomic import atomic_write_text

    lines = [",".join(_LOG_FIELDS)] + [",".join(f"{row[k]:g}" for k in _LOG_FIELDS) for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_fast_rcnn(run_dir: str | Path) -> FastRCNNDetector:
    """The finished model of a Fast R-CNN run (``model.safetensors``; a run
    written by ``compress_run`` names its SVD ranks in the file's metadata)."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "classes.txt", "backbone.txt", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished Fast R-CNN run: {name} is missing")
    config = from_dict(FastRCNNConfig, yaml.safe_load((run_dir / "config.yaml").read_text()))
    classes = read_classes(run_dir)
    classifier, _, _ = load_classifier(recorded_backbone(run_dir))
    model = build_fast_rcnn(classifier, len(classes), config)
    with safe_open(run_dir / "model.safetensors", framework="pt") as handle:
        ranks = (handle.metadata() or {}).get("svd_ranks")
    if ranks:
        compress_fc(model.head, tuple(int(r) for r in ranks.split(",")))
    model.load_state_dict(load_weights(run_dir / "model.safetensors"))
    return FastRCNNDetector(model.eval(), config, classes)


def compress_run(run_dir: str | Path, out: str | Path, ranks: tuple[int, int]) -> dict:
    """A copy of a finished Fast R-CNN run whose fc6 and fc7 are replaced by
    their truncated SVDs (SPEC section 6); it loads and runs like any run."""
    import shutil

    run_dir, out = Path(run_dir), Path(out)
    from sppnet.engine.detectors import method_of_run

    if method_of_run(run_dir).name != "fast-rcnn":
        raise ValueError(f"{run_dir} is not a Fast R-CNN run: truncated SVD applies to Fast R-CNN's fc layers "
                         "(SPP-net's and R-CNN's SVMs were trained on the uncompressed fc7)")
    detector = load_fast_rcnn(run_dir)
    head = detector.model.head
    if compressed_ranks(head) is not None:
        raise ValueError(f"{run_dir} is already compressed (ranks {compressed_ranks(head)})")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output folder {out} is not empty")
    before = sum(p.numel() for block in (head.fc6, head.fc7) for p in block.parameters())
    shapes = {name: tuple(getattr(head, name)[0].weight.shape[::-1]) for name in ("fc6", "fc7")}
    compress_fc(head, ranks)
    after = sum(p.numel() for block in (head.fc6, head.fc7) for p in block.parameters())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "classes.txt", "backbone.txt"):
        shutil.copyfile(run_dir / name, out / name)
    save_weights(out / "model.safetensors", detector.model.state_dict(),
                 metadata={"svd_ranks": f"{ranks[0]},{ranks[1]}", "compressed_from": str(run_dir.resolve())})
    return {"fc6": f"{shapes['fc6'][0]} -> {ranks[0]} -> {shapes['fc6'][1]}",
            "fc7": f"{shapes['fc7'][0]} -> {ranks[1]} -> {shapes['fc7'][1]}",
            "parameters_before": before, "parameters_after": after}
