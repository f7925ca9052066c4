"""Training an SPP classifier on an image folder (SPEC section 8).

Single-size training: random ``crop`` x ``crop`` crops (224 in the paper) of
images resized to shorter side ``resize`` (256), mirrored at random.
Multi-size training: the same, but every second epoch each crop is resized to
``second_size`` (180) before the forward pass; the weights are shared because
SPP makes the fc layers independent of the input size.

A run folder holds ``config.yaml``, ``classes.txt``, ``checkpoint.safetensors``
(everything needed to resume, written atomically after every epoch),
``model.safetensors`` (final weights: the weight average's with
``train.average_decay``), ``metrics.csv``, ``curves.png`` and
TensorBoard events (when tensorboard is installed). Data order,
augmentation and dropout masks are functions of (seed, epoch, index), so
``--resume`` after an interruption continues exactly where the last
completed epoch left off.

Data-parallel training (``torchrun --nproc_per_node N -m sppnet train
classify ...``, see ``sppnet.engine.distributed``): the global mini-batch is
``train.batch_size`` whatever N is; rank r takes the images r, r + N, ... of
each global mini-batch, the model is wrapped in DistributedDataParallel and
each rank's summed loss is scaled by N / (images in the global mini-batch),
so the averaged gradient is that of the global mean loss. The learning rate
therefore stays ``train.lr`` for any N, and the run follows the one-process
run up to float summation order (dropout draws each image's mask from the
image's own generator, so masks do not depend on the split). Validation is
sharded the same way; only rank 0 logs and writes the run folder. One
exception to the equality: trunks with batch normalisation (resnet18/50)
normalise with each rank's own share of the batch, as plain DDP does
(SyncBatchNorm needs GPUs).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from torch.nn import functional as F
from torch.utils.data import DataLoader

from sppnet.config import from_dict, to_dict
from sppnet.atomic import remove_stale_temp_files
from sppnet.engine import distributed
from sppnet.engine.classification_data import (
    TrainCrops, center_view_error, collate_crops, global_batches, sample_generator,
)
from sppnet.engine.run_folder import read_classes, record_environment
from sppnet.engine.schedule import scaled_steps, step_lr, warmed_up_lr
from sppnet.engine.training_log import plot_classifier_curves, write_rows_csv
from sppnet.engine.weight_average import WeightAverage
from sppnet.data.folder import read_image_folder
from sppnet.engine.checkpoint import (
    Checkpoint, TrainingDiverged, load_checkpoint, load_weights, save_checkpoint, save_weights,
)
from sppnet.models.backbones.registry import build_backbone
from sppnet.models.classifier import SPPClassifier

__all__ = ["ClassifierModelConfig", "ClassifyTrainConfig", "ClassifyPretrainConfig", "ClassifyConfig",
           "build_classifier", "train_classifier", "training_schedule", "load_classifier", "TrainingDiverged"]


@dataclass(frozen=True)
class ClassifierModelConfig:
    backbone: str = "zf5"  # zf5 | zf5-bn (a modern variant, BN instead of LRN) | convnet5 | overfeat5 | overfeat7 | alexnet | vgg16 | resnet18 | resnet50
    width: float = 1.0  # channel multiplier of the paper nets (small CPU variants)
    weights: Path | None = None  # local trunk weights file (safetensors or torchvision state_dict)
    spp: bool = True  # False: the paper's no-SPP baseline (one pool to 6 x 6, fixed input size)
    levels: tuple[int, ...] = (6, 3, 2, 1)  # pyramid levels (paper: {6,3,2,1}; ablation {4,3,2,1})
    hidden: int = 4096  # fc6 / fc7 width
    dropout: float = 0.5  # dropout after fc6 and fc7
    # fc6 and fc7's initial bias. 1 starts their ReLUs firing (Krizhevsky et al.'s
    # init): with 0, most fc6 units of a small net die in the first Adam steps
    # and a many-class run can sit at uniform outputs for epochs (RESULTS.md).
    fc_bias: float = 0.0


@dataclass(frozen=True)
class ClassifyTrainConfig:
    epochs: int = 90
    # Small training sets: at least this many SGD steps (epochs are added, the
    # lr steps move to the same fraction of the longer run); 0 = exactly ``epochs``.
    min_iterations: int = 0
    batch_size: int = 128
    resize: int = 256  # shorter side before cropping (and for test views)
    crop: int = 224  # training crop side (single-size training)
    multi_size: bool = False  # alternate epochs at crop and second_size
    second_size: int = 180  # multi-size training: odd epochs resize each crop to this
    flip: bool = True  # random horizontal mirroring
    # Scale augmentation: None = the paper's crops (crop x crop of the image
    # resized to shorter side ``resize``); (min, max) = a random window of that
    # fraction of the resized image's area, aspect 3:4-4:3, resized to crop x crop.
    crop_area: tuple[float, float] | None = None
    colour_jitter: float = 0.0  # per-channel gain and shift, see data.transforms.colour_jitter
    right_angles: bool = False  # turn each crop by a random multiple of 90 degrees (data.transforms.random_right_angle)
    channel_order: bool = False  # shuffle each crop's colour channels (data.transforms.random_channel_order)
    erase: float = 0.0  # probability of noise over a random rectangle of each crop (data.transforms.random_erasing)
    # Mixup (Zhang et al. 2018): each crop blended with the next one of its
    # mini-batch shard, weight w ~ Beta(mixup, mixup) folded to w >= 0.5, and its
    # loss w * CE(own label) + (1 - w) * CE(partner's). 0 = off.
    mixup: float = 0.0
    label_smoothing: float = 0.0  # cross-entropy targets (1 - e) on the label, e / K spread (torch's definition)
    optimizer: Literal["sgd", "adam"] = "sgd"  # the paper uses SGD; adam helps tiny from-scratch runs
    lr: float = 0.01
    # The conv trunk's lr as a fraction of ``lr`` (the fc layers train at ``lr``):
    # below 1 a pre-trained trunk (model.weights, the generic stage) moves less
    # than the freshly started fc layers; 0 freezes its weights (a batch-norm
    # trunk's running statistics still follow the training crops).
    trunk_lr_scale: float = 1.0
    lr_steps: tuple[int, ...] = (30, 60)  # epochs after which the lr is divided by 10 (paper: twice, on plateaus)
    warmup_iterations: int = 0  # the lr rises linearly from lr / warmup_iterations to lr over these first steps
    # Weight averaging (engine/weight_average.py): > 0 keeps an exponential moving
    # average of the weights over steps with this decay; it is what each epoch
    # validates and what the run saves. 0 = off: the last step's weights.
    average_decay: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    workers: int = 0  # DataLoader worker processes (decoding)
    seed: int = 0
    val_split: str | None = "test"  # split evaluated (centre view) after each epoch; None to skip

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "resize", "crop", "second_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be >= 0, got {self.warmup_iterations}")
        if not 0 <= self.average_decay < 1:
            raise ValueError(f"average_decay must be in [0, 1) (0 = off), got {self.average_decay}")
        if self.min_iterations < 0:
            raise ValueError(f"min_iterations must be >= 0, got {self.min_iterations}")
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) cannot exceed resize ({self.resize})")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.trunk_lr_scale <= 1:
            raise ValueError(f"trunk_lr_scale must be in [0, 1], got {self.trunk_lr_scale}")
        if self.crop_area is not None and not (len(self.crop_area) == 2 and 0 < self.crop_area[0] <= self.crop_area[1] <= 1):
            raise ValueError(f"crop_area must be null or [min, max] with 0 < min <= max <= 1, got {self.crop_area}")
        if not 0 <= self.erase <= 1:
            raise ValueError(f"erase must be a probability in [0, 1], got {self.erase}")
        if not 0 <= self.colour_jitter < 1:
            raise ValueError(f"colour_jitter must be in [0, 1), got {self.colour_jitter}")
        if self.mixup < 0:
            raise ValueError(f"mixup must be >= 0 (a Beta distribution's parameter; 0 = off), got {self.mixup}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class ClassifyPretrainConfig:
    """ImageNet's stand-in for a classifier trained from scratch
    (``engine/generic_pretrain.py``): with ``generic_images > 0`` and no
    ``model.weights``, the model starts from the trunk of preset
    ``generic_preset`` trained for ``generic_epochs`` epochs on that many
    generated images of 44 shape classes, made once per machine and cached
    (the detectors' pre-training shares it). 0 = from random weights.
    ``generic_fc``: fc6 and fc7 start from that generic classifier's too (only
    fc8 new, as fine-tuning from an ImageNet model keeps every layer but the
    last); the model's levels and fc width must then be the stage's."""
    generic_images: int = 0
    generic_epochs: int = 10
    generic_preset: str = "classify-crops-tiny"
    generic_fc: bool = False

    def __post_init__(self) -> None:
        if self.generic_images < 0 or self.generic_epochs < 1:
            raise ValueError(f"pretrain.generic_images must be >= 0 and generic_epochs >= 1, got "
                             f"{self.generic_images} and {self.generic_epochs}")


@dataclass(frozen=True)
class ClassifyConfig:
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    train: ClassifyTrainConfig = field(default_factory=ClassifyTrainConfig)
    pretrain: ClassifyPretrainConfig = field(default_factory=ClassifyPretrainConfig)


def build_classifier(config: ClassifierModelConfig, num_classes: int, input_size: int) -> SPPClassifier:
    """``input_size``: the training crop, the fixed input of the no-SPP baseline."""
    trunk = build_backbone(config.backbone, config.width, config.weights)
    return SPPClassifier(trunk, num_classes, config.levels, config.hidden, config.dropout, config.spp, input_size,
                         config.fc_bias)


class _SummedLoss(torch.nn.Module):
    """The model and its loss as DDP wraps them: ``(images, labels, mix)`` ->
    (summed cross-entropy, wrong predictions); no images -> a zero that still
    reaches every parameter (the rank joins the gradient all-reduce). ``mix``:
    None, or each crop's mixup weight ``(B,)``: crop i is blended with crop
    i + 1 (cyclically) and scored against both labels."""

    def __init__(self, model: SPPClassifier, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, images: torch.Tensor | None, labels: torch.Tensor | None,
                mix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if images is None:
            return distributed.zero_loss(self.model), torch.zeros((), dtype=torch.long)
        if mix is None:
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=self.label_smoothing)
            return loss, (logits.argmax(1) != labels).sum()
        weight = mix.view(-1, 1, 1, 1).to(images.dtype)
        logits = self.model(weight * images + (1 - weight) * images.roll(-1, 0))
        own = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        partner = F.cross_entropy(logits, labels.roll(-1, 0), reduction="none", label_smoothing=self.label_smoothing)
        return (mix * own + (1 - mix) * partner).sum(), (logits.argmax(1) != labels).sum()


def mixup_weights(config: ClassifyTrainConfig, epoch: int, indices: list[int]) -> torch.Tensor:
    """Each crop's mixup weight, drawn from its own generator (stream 2, so
    crops and dropout keep their draws) and folded to >= 0.5: the crop's own
    label stays the one it is counted right or wrong against."""
    draws = [np.random.default_rng(sample_generator(config.seed, epoch, i, stream=2).initial_seed()).beta(
        config.mixup, config.mixup) for i in indices]
    return torch.tensor([max(w, 1 - w) for w in draws], dtype=torch.float32)


_PLOT_EVERY_S = 30.0  # curves.png's redrawing interval during training


def training_schedule(config: ClassifyTrainConfig, images: int) -> tuple[int, tuple[int, ...]]:
    """(epochs, lr steps) on a training split of ``images``: the config's, or,
    when those epochs make fewer than ``min_iterations`` mini-batches, the
    fewest epochs that reach them, with each lr step at the same fraction
    of the run (``epochs`` counts passes over the data, so a small set would
    otherwise get few steps: 25 epochs of 400 images are 325 of them)."""
    per_epoch = max(1, math.ceil(images / config.batch_size))
    if config.epochs * per_epoch >= config.min_iterations:
        return config.epochs, tuple(config.lr_steps)
    epochs = math.ceil(config.min_iterations / per_epoch)
    return epochs, scaled_steps(config.lr_steps, config.epochs, epochs)


def _make_optimizer(model: SPPClassifier, config: ClassifyTrainConfig) -> torch.optim.Optimizer:
    """Each parameter group's ``lr_scale`` multiplies the schedule's lr
    (:func:`_set_lr`): one group at one lr, or the trunk's and the rest's
    when ``trunk_lr_scale`` < 1. A frozen trunk (scale 0) is left out and
    stops needing gradients."""
    if config.trunk_lr_scale == 1:
        groups = [{"params": list(model.parameters()), "lr_scale": 1.0}]
    else:
        trunk = list(model.trunk.parameters())
        trunk_ids = {id(p) for p in trunk}
        groups = [{"params": [p for p in model.parameters() if id(p) not in trunk_ids], "lr_scale": 1.0}]
        if config.trunk_lr_scale > 0:
            groups.insert(0, {"params": trunk, "lr_scale": config.trunk_lr_scale})
        else:
            model.trunk.requires_grad_(False)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints before trunk_lr_scale have no scale


def _generic_start(config: ClassifyConfig, run_dir: Path, log) -> Path:
    """The generic stage's trunk file for ``config`` (``config.pretrain``); its
    model must have the same trunk as the stage's preset (and the same fc
    layers with ``generic_fc``)."""
    from sppnet.engine.generic_pretrain import generic_classify_config, generic_trunk  # imports this module

    stage = generic_classify_config(config.pretrain.generic_preset, config.pretrain.generic_epochs)
    ours, theirs = config.model, stage.model
    if (ours.backbone, ours.width) != (theirs.backbone, theirs.width):
        raise ValueError(f"pretrain.generic_images needs the trunk of pretrain.generic_preset "
                         f"{config.pretrain.generic_preset!r} ({theirs.backbone} at width {theirs.width}); "
                         f"this model is {ours.backbone} at width {ours.width}: set pretrain.generic_images=0 "
                         f"or model.weights")
    if config.pretrain.generic_fc and (ours.spp, tuple(ours.levels), ours.hidden) != (
            theirs.spp, tuple(theirs.levels), theirs.hidden):
        raise ValueError(f"pretrain.generic_fc needs the fc layers of pretrain.generic_preset "
                         f"{config.pretrain.generic_preset!r} (spp {theirs.spp}, levels {list(theirs.levels)}, "
                         f"hidden {theirs.hidden}); this model has spp {ours.spp}, levels {list(ours.levels)}, "
                         f"hidden {ours.hidden}: set pretrain.generic_fc=false")
    return generic_trunk(stage, config.pretrain.generic_images, log=log, fallback=run_dir / "pretrain-generic")


def _load_generic_fc(model: SPPClassifier, config: ClassifyConfig, run_dir: Path, log) -> None:
    """fc6 and fc7 of the generic classifier (``pretrain.generic_fc``; its
    shapes checked by ``_generic_start``) into ``model``."""
    from sppnet.engine.generic_pretrain import generic_classifier, generic_classify_config  # imports this module

    stage = generic_classify_config(config.pretrain.generic_preset, config.pretrain.generic_epochs)
    run = generic_classifier(stage, config.pretrain.generic_images, log=log, fallback=run_dir / "pretrain-generic")
    weights = load_weights(run / "model.safetensors")
    fc = {name: value for name, value in weights.items() if name.split(".")[0] in ("fc6", "fc7")}
    model.load_state_dict({**model.state_dict(), **fc})
    log(f"fc6 and fc7 from the generic classifier {run}")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def train_classifier(
    config: ClassifyConfig, data: str | Path, run_dir: str | Path, resume: bool = False, progress: bool = True,
    log=print,
) -> SPPClassifier:
    """Train (or resume) a classifier on ``data/train``; returns the model.

    In a process group (torchrun) every rank calls this with the same
    arguments: each takes its share of every global mini-batch of
    ``train.batch_size`` images, gradients are averaged by DDP, the learning
    rate is ``train.lr`` for any number of processes (the global batch does
    not change), and rank 0 alone logs and writes the run folder."""
    run_dir = Path(run_dir)
    log = distributed.main_only(log)
    main = distributed.is_main()
    train_config = config.train
    dataset = read_image_folder(data, "train")
    for item in dataset.skipped:
        log(f"skipped: {item}")
    val = None
    if train_config.val_split and (Path(data) / train_config.val_split).is_dir():
        val = read_image_folder(data, train_config.val_split, dataset.classes)
    checkpoint_path = run_dir / "checkpoint.safetensors"
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise ValueError(f"run folder {run_dir} is not empty: pass --resume to continue it or choose another --out")
    distributed.barrier()  # every rank has looked at the folder before rank 0 writes into it

    model_config = config.model
    if config.pretrain.generic_images and model_config.weights is None and not (resume and checkpoint_path.is_file()):
        model_config = replace(model_config, weights=_generic_start(config, run_dir, log))
    torch.manual_seed(train_config.seed)
    model = build_classifier(model_config, len(dataset.classes), train_config.crop)
    if config.pretrain.generic_images and config.pretrain.generic_fc and config.model.weights is None:
        _load_generic_fc(model, config, run_dir, log)  # a resumed run's checkpoint then replaces them
    optimizer = _make_optimizer(model, train_config)
    average = WeightAverage(model, train_config.average_decay) if train_config.average_decay else None
    start_epoch, rows = 0, []
    if resume and main and run_dir.is_dir():
        remove_stale_temp_files(run_dir)  # left by a process killed while writing
    if resume and checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path)
        if saved.extra.get("config") != to_dict(config):
            raise ValueError(f"{checkpoint_path} was written with another config; resume with the run's config.yaml")
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        torch.set_rng_state(saved.rng_state)
        if average is not None:
            average.load_state_dict(saved.averaged, saved.extra["average_updates"])
        start_epoch, rows = saved.extra["epoch"], saved.extra["rows"]
        log(f"resuming {run_dir} after epoch {start_epoch}")
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
        (run_dir / "classes.txt").write_text("".join(f"{c}\n" for c in dataset.classes), encoding="utf-8")
    record_environment(run_dir, resumed=start_epoch > 0)
    writer = _tensorboard(run_dir) if main else None
    from tqdm import tqdm

    epochs, lr_steps = training_schedule(train_config, len(dataset))
    if epochs != train_config.epochs:
        log(f"{len(dataset)} training images: {epochs} epochs instead of {train_config.epochs} to reach "
            f"train.min_iterations={train_config.min_iterations}, lr steps after epochs {list(lr_steps)}")
    last_plot = -math.inf
    with distributed.per_sample_dropout(model) as set_dropout_generators:
        step = distributed.wrap_ddp(_SummedLoss(model, train_config.label_smoothing))
        for epoch in range(start_epoch, epochs):
            lr = step_lr(train_config.lr, lr_steps, epoch)
            _set_lr(optimizer, lr)
            size = train_config.second_size if train_config.multi_size and epoch % 2 == 1 else train_config.crop
            order = torch.Generator().manual_seed(train_config.seed * 7919 + epoch)
            batches = [distributed.shard(batch) for batch in global_batches(len(dataset), train_config.batch_size, order)]
            loader = DataLoader(TrainCrops(dataset, train_config, epoch), batch_sampler=batches,
                                num_workers=train_config.workers, collate_fn=collate_crops)
            step.train()
            started, loss_sum, wrong, seen, errors = time.perf_counter(), 0.0, 0, 0, []
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs} ({size}px)",
                       disable=None if progress and main else True, leave=False)
            for batch_index, (images, labels, indices, batch_errors) in enumerate(bar):
                _set_lr(optimizer, warmed_up_lr(lr, epoch * len(batches) + batch_index, train_config.warmup_iterations))
                errors.extend(batch_errors)
                if images is not None:
                    if size != images.shape[-1]:
                        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                    set_dropout_generators([sample_generator(train_config.seed, epoch, i, stream=1) for i in indices])
                mix = mixup_weights(train_config, epoch, indices) if train_config.mixup and images is not None else None
                local_loss, local_wrong = step(images, labels, mix)
                count = 0 if labels is None else len(labels)
                # Global-batch totals: the loss normalisation, the divergence check and the logs.
                totals = distributed.all_reduce_sum(torch.tensor(
                    [float(local_loss.detach()), float(local_wrong), count], dtype=torch.float64))
                batch_loss, batch_wrong, batch_count = totals.tolist()
                if not math.isfinite(batch_loss):
                    raise TrainingDiverged(
                        f"loss became {batch_loss} in epoch {epoch + 1}; stopped. The last good checkpoint "
                        f"({checkpoint_path if checkpoint_path.exists() else 'none yet'}) is kept; lower train.lr")
                optimizer.zero_grad()
                # DDP averages over the N ranks: N / global count turns the summed losses into the global mean.
                (local_loss * (distributed.world() / max(batch_count, 1))).backward()
                if batch_count == 0:
                    continue
                optimizer.step()
                if average is not None:
                    average.update(model)
                loss_sum += batch_loss
                wrong += int(batch_wrong)
                seen += int(batch_count)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
            for gathered in distributed.gather_objects(errors):
                for error in gathered:
                    log(f"skipped: {error}")
            scored = model if average is None else average.averaged
            val_error = center_view_error(scored, val, train_config.resize, train_config.crop) if val else ""
            row = {"epoch": epoch + 1, "size": size, "lr": lr, "train_loss": loss_sum / max(seen, 1),
                   "train_top1_error": wrong / max(seen, 1), "val_top1_error": val_error,
                   "seconds": round(time.perf_counter() - started, 2)}
            rows.append(row)
            if main:
                # curves.png takes ~0.2 s to draw: a small folder's 200 short epochs spent a
                # tenth of their time on it. Drawn at most every 30 s, and after the last epoch.
                plot = epoch == epochs - 1 or time.perf_counter() - last_plot >= _PLOT_EVERY_S
                _write_epoch(run_dir, writer, rows, model, optimizer, config, plot, average)
                last_plot = time.perf_counter() if plot else last_plot
            log(f"epoch {epoch + 1}/{epochs}: size {size}, lr {lr:g}, loss {row['train_loss']:.4f}, "
                f"train error {row['train_top1_error']:.3f}"
                + (f", val error {val_error:.3f}" if val_error != "" else "") + f" ({row['seconds']:.0f} s)")
    final = model if average is None else average.averaged
    if main:
        save_weights(run_dir / "model.safetensors", final.state_dict())
    if writer is not None:
        writer.close()
    distributed.barrier()  # the other ranks may read the finished run (e.g. a detector's pre-trained trunk)
    return final


def _write_epoch(run_dir: Path, writer, rows: list[dict], model: SPPClassifier, optimizer: torch.optim.Optimizer,
                 config: ClassifyConfig, plot: bool = True, average: WeightAverage | None = None) -> None:
    """Rank 0, after each epoch: TensorBoard scalars, metrics.csv, curves.png (if ``plot``) and the checkpoint."""
    row = rows[-1]
    if writer is not None:
        for key in ("train_loss", "train_top1_error", "lr") + (("val_top1_error",) if row["val_top1_error"] != "" else ()):
            writer.add_scalar(key, row[key], row["epoch"])
        writer.flush()
    write_rows_csv(run_dir / "metrics.csv", rows, list(row))
    if plot:
        plot_classifier_curves(rows, run_dir / "curves.png")
    extra = {"epoch": row["epoch"], "rows": rows, "config": to_dict(config)}
    if average is not None:
        extra["average_updates"] = average.updates
    save_checkpoint(run_dir / "checkpoint.safetensors", Checkpoint(
        model=model.state_dict(), optimizer=optimizer.state_dict(), rng_state=torch.get_rng_state(),
        extra=extra, averaged=None if average is None else average.state_dict()))


def load_classify_config(run_dir: str | Path) -> ClassifyConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"not a classification run (no config.yaml): {run_dir}")
    return from_dict(ClassifyConfig, yaml.safe_load(path.read_text(encoding="utf-8")))


def load_classifier(run_dir: str | Path) -> tuple[SPPClassifier, ClassifyConfig, tuple[str, ...]]:
    """The trained model of a finished run folder (``model.safetensors``), its
    config and its classes.

    Raises:
        FileNotFoundError: not a run folder, or a run that has not finished
            (no ``model.safetensors``: its last checkpoint is not taken
            instead, so that what a detector freezes never changes silently).
    """
    run_dir = Path(run_dir)
    config = load_classify_config(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: the classifier run has not finished "
                                f"(finish it with `sppnet train classify ... --out {run_dir} --resume`)")
    classes = read_classes(run_dir)
    # A local weights file was only needed to start training; the run has its own.
    model = build_classifier(type(config.model)(**{**config.model.__dict__, "weights": None}), len(classes), config.train.crop)
    model.load_state_dict(load_weights(weights))
    return model.eval(), config, classes
