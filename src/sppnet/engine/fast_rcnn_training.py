"""Training Fast R-CNN (SPEC section 6). Its configs, the model built from a
classifier run and loading a finished run are ``sppnet.engine.fast_rcnn``.

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
smooth-L1 summed over its RoIs and divided by their number. Each training
image is decoded, and its proposals read from the cache, once per run
(``engine.memory_cache``), not at every iteration.

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
biases at twice the learning rate. ``train.precision: bf16`` runs the forward
and backward passes under bfloat16 autocast (channels-last convs); the
weights, their gradients, the optimizer and the losses stay float32.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sppnet.data.images import ImageError
from sppnet.data.records import DetectionDataset
from sppnet.data.transforms import random_channel_order
from sppnet.engine import distributed
from sppnet.engine.checkpoint import (
    Checkpoint, TrainingDiverged, load_checkpoint, load_weights, save_checkpoint, save_weights,
)
from sppnet.engine.detection_stages import dataset_proposals
from sppnet.engine.fast_rcnn import FastRCNNConfig, FastRCNNDetector, FastRCNNTrainConfig, build_fast_rcnn, image_tensor
from sppnet.engine.memory_cache import TRAINING_IMAGE_BYTES, TRAINING_PROPOSAL_BYTES, MemoryCache
from sppnet.engine.pretrain import start_detector_run
from sppnet.engine.schedule import step_lr, warmed_up_lr
from sppnet.engine.training_log import read_rows_csv, write_rows_csv
from sppnet.fast_path import autocast, gradients_finite, training_precision
from sppnet.models.detection.fast_rcnn import FastRCNN, freeze_first_convs
from sppnet.ops import mirror_boxes

__all__ = ["train_fast_rcnn"]

_LOG_FIELDS = ("iteration", "lr", "loss_classifier", "loss_box_reg")  # log.csv


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
    summed over the RoIs, the RoI count and how many of them the head names
    as an object (its highest score not background; 0-d tensors); with no
    RoIs, zeros that still reach every trainable parameter."""

    def __init__(self, model: FastRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, images, boxes, targets, generators, dropout_seeds):
        classification, box, count, named = [], [], 0, 0
        for image, proposals, target, generator, seed in zip(images, boxes, targets, generators, dropout_seeds):
            torch.manual_seed(seed)  # dropout
            rois, objects = [], []

            def trained_on(module, inputs, outputs):  # the head's one pass over the RoIs trained on
                rois.append(len(outputs[0]))
                objects.append(int((outputs[0].detach().argmax(1) > 0).sum()))

            hook = self.model.head.register_forward_hook(trained_on)
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
            named += objects[0]
        if count == 0:
            zero = distributed.zero_loss(self.model)
            return zero, zero, torch.zeros(()), torch.zeros(())
        return (torch.stack(classification).sum(), torch.stack(box).sum(), torch.tensor(float(count)),
                torch.tensor(float(named)))


# A head that names (almost) no RoI an object has collapsed to the class prior: every
# window scores background at one probability, and the detector finds nothing. Checked
# over a run's last iterations (at most _COLLAPSE_WINDOW of them, if it ran at least
# _COLLAPSE_MIN). A working run names many: a quarter of the papers' sampled RoIs are
# foreground, and OHEM's hardest RoIs include the objects it misses. The progress lines
# show the share. Session 37's collapsed run (RESULTS.md) scored every window background.
_COLLAPSE_WINDOW, _COLLAPSE_MIN, _COLLAPSE_SHARE = 500, 100, 0.01


def collapse_warning(named_shares: list[float]) -> str | None:
    """A warning for the log when the last iterations' RoIs were almost never
    named objects (``named_shares``: per iteration, the share of its RoIs the
    head named an object), else None."""
    if len(named_shares) < _COLLAPSE_MIN:
        return None
    share = float(np.mean(named_shares[-_COLLAPSE_WINDOW:]))
    if share >= _COLLAPSE_SHARE:
        return None
    return (f"warning: in its last {min(len(named_shares), _COLLAPSE_WINDOW)} iterations the head named "
            f"{100 * share:.2f}% of the training RoIs an object: it has collapsed to the class prior and will "
            "detect nothing. Train again with a longer lr warm-up (train.warmup_iterations) or a lower train.lr")


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
    settings = config.train
    classifier_run, classifier = start_detector_run(config, train, run_dir, backbone, settings.seed, resume, log,
                                                    data_root)
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
    precision = training_precision(settings.precision, log)
    model.set_precision(precision)  # channels-last weights for bf16, before the optimizer sees them
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
    rows = read_rows_csv(log_path, "iteration", start) if start else []
    decoded = MemoryCache(image_tensor, TRAINING_IMAGE_BYTES)
    boxes_of = MemoryCache(proposals.__getitem__, TRAINING_PROPOSAL_BYTES)
    summed_losses = distributed.wrap_ddp(_SummedLosses(model))
    summed_losses.train()

    def mini_batch(iteration: int) -> tuple[list, ...]:
        """This rank's images of the iteration with their proposals, targets,
        generators and dropout seeds (drawn afresh from (seed, iteration, j)
        at each call)."""
        images, boxes, targets, generators, dropout_seeds = [], [], [], [], []
        batch = _batch_indices(len(records), iteration, settings.images_per_batch, settings.seed)
        for position in distributed.shard(range(len(batch))):  # this rank's images of the global mini-batch
            record = records[batch[position]]
            generator = _generator(settings.seed, iteration, position)
            dropout_seed = int(torch.randint(2**62, (1,), generator=generator))
            try:
                image = decoded(record.image_path)
            except ImageError as error:
                log(f"skipped: {error}")
                continue
            proposals_i, gt_boxes = boxes_of(record.image_id).float(), record.boxes.float()
            if settings.flip and bool(torch.rand(1, generator=generator) < 0.5):
                image = image.flip(-1)
                proposals_i, gt_boxes = mirror_boxes(proposals_i, record.width), mirror_boxes(gt_boxes, record.width)
            if settings.channel_order:  # drawn only when asked for, so that runs without it keep their draws
                image = random_channel_order(image, generator)
            images.append(image)
            boxes.append(proposals_i)
            targets.append({"boxes": gt_boxes, "labels": record.labels, "difficult": record.difficult})
            generators.append(generator)
            dropout_seeds.append(dropout_seed)
        return images, boxes, targets, generators, dropout_seeds

    def forward_backward(iteration: int, precision: str) -> torch.Tensor:
        """The mini-batch's losses and their gradients (when finite): returns
        the totals over all ranks (classification, box, RoI count, RoIs named
        an object; float64)."""
        with autocast(precision):
            classification, box, count, named = summed_losses(*mini_batch(iteration))
        totals = distributed.all_reduce_sum(torch.tensor(
            [float(classification.detach()), float(box.detach()), float(count), float(named)], dtype=torch.float64))
        if bool(torch.isfinite(totals).all()):
            optimizer.zero_grad()
            # DDP averages over the N ranks: N / (global RoI count) turns the sums into the mini-batch's losses.
            ((classification + box) * (distributed.world() / max(totals[2].item(), 1))).backward()
        return totals

    started = time.perf_counter()
    named_shares: list[float] = []  # this process's iterations: the share of RoIs named an object
    iteration = start
    for iteration in range(start, settings.iterations):
        lr = warmed_up_lr(step_lr(settings.lr, settings.lr_steps, iteration), iteration, settings.warmup_iterations)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        totals = forward_backward(iteration, precision)
        if precision == "bf16" and not (bool(torch.isfinite(totals).all()) and gradients_finite(optimizer)):
            # oneDNN's AMX kernel for a convolution's weight gradient reads memory it did not
            # write: where freed memory held a NaN, a finite step's gradients come out NaN (7 times
            # in ~68,000 iterations, at random: the same step again is mostly finite; RESULTS.md
            # session 25, benchmarks/results/bf16-nan-amx-2026-12-06.py). The step is taken again
            # in float32 (the same images, RoIs and dropout); only a non-finite float32 loss stops the run.
            log(f"  iteration {iteration + 1}: the loss or its gradients in bfloat16 are not finite "
                f"(loss {(totals[0] + totals[1]).item() / max(totals[2].item(), 1):.4g}); this step is computed "
                "again in float32")
            totals = forward_backward(iteration, "fp32")
        # Sums over the whole mini-batch (all ranks): its RoI count normalises the losses.
        rois = totals[2].item()
        loss_classifier, loss_box = (totals[:2] / max(rois, 1)).tolist()
        if not np.isfinite(loss_classifier + loss_box):
            raise TrainingDiverged(
                f"Fast R-CNN loss became {loss_classifier + loss_box} at iteration {iteration + 1}; stopped. The last good "
                f"checkpoint ({checkpoint_path if checkpoint_path.exists() else 'none yet'}) is kept; lower train.lr")
        if rois == 0:
            continue
        named_shares.append(totals[3].item() / rois)
        optimizer.step()
        rows.append({"iteration": iteration + 1, "lr": lr, "loss_classifier": loss_classifier, "loss_box_reg": loss_box})
        done = iteration + 1
        if main and (done % settings.checkpoint_every == 0 or done == settings.iterations):
            write_rows_csv(log_path, rows, _LOG_FIELDS)
            save_checkpoint(checkpoint_path, Checkpoint(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                                        extra={"iteration": done}))
        if done % max(1, settings.iterations // 10) == 0:
            recent = rows[-50:]
            log(f"  iteration {done}/{settings.iterations}: loss_cls {np.mean([r['loss_classifier'] for r in recent]):.3f}, "
                f"loss_box {np.mean([r['loss_box_reg'] for r in recent]):.3f}, "
                f"RoIs named objects {100 * np.mean(named_shares[-50:]):.0f}%, lr {lr:g} "
                f"({time.perf_counter() - started:.0f} s)")
    warning = collapse_warning(named_shares)
    if warning:
        log(warning)
    model.set_precision("fp32")  # inference starts on the exact path (the trunk's weights contiguous again)
    if main:
        save_weights(final, model.state_dict())
    distributed.barrier()
    return FastRCNNDetector(model.eval(), config, train.classes)
