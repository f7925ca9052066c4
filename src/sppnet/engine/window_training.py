"""The training stages SPP-net and R-CNN share once proposals are labelled:
fine-tuning on windows, then per-class SVMs and box regressors, each stored in
the run folder (SPEC sections 4, 5 and 7).

The two methods differ only in what a window becomes before the fc layers:
SPP-net pools it from the image's cached conv5 maps, R-CNN warps its pixels
and runs the whole network. Fine-tuning therefore takes a ``window_inputs``
function ``(record, boxes (R, 4), flipped) -> network input``.

Crash safety: fine-tuning writes ``finetune-checkpoint.safetensors`` (weights,
momentum, the sampling generator's and torch's RNG states, iteration) every
``checkpoint_every`` iterations, atomically; resuming from it repeats the
uninterrupted run bit for bit on CPU. The SVM and box-regression stages are
deterministic functions of the fine-tuned weights and the data: interrupted,
they are recomputed whole on ``--resume`` with the same result. A NaN or
infinite loss stops fine-tuning with ``TrainingDiverged``; the last good
checkpoint stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from sppnet.config import from_dict
from sppnet.data.records import ImageRecord
from sppnet.engine.classification import load_classifier
from sppnet.engine.checkpoint import Checkpoint, TrainingDiverged, load_checkpoint, load_weights, save_checkpoint, save_weights
from sppnet.engine.detection_stages import MiningConfig, WindowFeatures, train_box_regression, train_svms
from sppnet.engine.run_folder import read_classes, recorded_backbone
from sppnet.engine.schedule import step_lr
from sppnet.fast_path import PRECISIONS, autocast, gradients_finite, training_precision
from sppnet.models.box_regression import BoxRegressorConfig, BoxRegressors
from sppnet.models.svm import LinearSVMs, SVMConfig
from sppnet.models.windows import LabelledWindows
from sppnet.ops import nms

__all__ = [
    "WindowFinetuneConfig", "finetune_on_windows", "svm_stage", "box_regression_stage", "scoring_stages", "load_svms",
    "load_regressors", "read_staged_run",
]

WindowInputs = Callable[[ImageRecord, torch.Tensor, bool], torch.Tensor]


@dataclass(frozen=True)
class WindowFinetuneConfig:
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
    flip: bool = True  # each chosen image's windows come from its mirror with probability 1/2
    # Online hard example mining (Shrivastava et al. 2016): 0 = off (the papers'
    # sampling by fg_fraction); otherwise every labelled window of each chosen image
    # is scored by the network (dropout off), overlapping windows are thinned by NMS
    # at this IoU over their losses, and the batch_size / images_per_batch windows
    # with the highest loss are trained on; fg_fraction is then unused. Scoring is a
    # forward pass per window: cheap for SPP-net's fc layers on pooled windows (~4x the
    # fine-tuning time), the whole network per warped window for R-CNN.
    hard_mining_nms: float = 0.0
    # "bf16": the forward passes (OHEM's scoring included) under bfloat16 autocast, the CPU
    # fast path of sppnet.fast_path; weights, gradients and the loss stay float32.
    precision: str = "fp32"
    seed: int = 0
    checkpoint_every: int = 200  # iterations between crash-safe checkpoints

    def __post_init__(self) -> None:
        for name, low in (("iterations", 0), ("batch_size", 1), ("images_per_batch", 1), ("checkpoint_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"finetune.{name} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= self.fg_fraction <= 1.0:
            raise ValueError(f"finetune.fg_fraction must be in [0, 1], got {self.fg_fraction!r}")
        if not 0.0 <= self.bg_low < self.bg_high <= self.fg_threshold:
            raise ValueError(f"finetune needs 0 <= bg_low < bg_high <= fg_threshold, got bg_low={self.bg_low}, "
                             f"bg_high={self.bg_high}, fg_threshold={self.fg_threshold}")
        if not self.lr > 0:
            raise ValueError(f"finetune.lr must be positive, got {self.lr!r}")
        if not 0.0 <= self.hard_mining_nms <= 1.0:
            raise ValueError(f"finetune.hard_mining_nms must be in [0, 1] (0: off), got {self.hard_mining_nms!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"finetune.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


def finetune_on_windows(
    network: nn.Module, parameters: Sequence[nn.Parameter], records: Sequence[ImageRecord],
    windows: dict[str, LabelledWindows], tune: WindowFinetuneConfig, window_inputs: WindowInputs,
    checkpoint_path: Path | None, log=print, train_mode: Callable[[], None] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> None:
    """SGD on (K+1)-way cross-entropy of ``network(window_inputs(...))``:
    each iteration draws ``images_per_batch`` images, then up to
    ``fg_fraction`` foreground and the rest background windows from each.
    Checkpoints go to ``checkpoint_path`` (None: no checkpoints), and
    training continues from there when it exists. ``train_mode`` puts
    the network in training mode (default ``network.train()``). ``augment``
    (None: none) maps each image's window inputs to new ones with the sampling
    generator, so its draws are checkpointed with the rest; it draws only when
    given, so runs without it keep their draws. With hard mining the step's
    images are drawn first, their windows scored together (``_hardest_windows``),
    then each image's chosen windows augmented in turn."""
    generator = torch.Generator().manual_seed(tune.seed)  # images, windows, flips
    torch.manual_seed(tune.seed)  # dropout
    optimizer = torch.optim.SGD(parameters, lr=tune.lr, momentum=tune.momentum, weight_decay=tune.weight_decay)
    records = [r for r in records if r.image_id in windows]
    if not records:
        raise ValueError("no training image has labelled windows (every image was skipped or has no proposals)")
    start = 0
    if checkpoint_path is not None and checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path)
        network.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        torch.set_rng_state(saved.rng_state)
        generator.set_state(saved.generator_state)
        start = int(saved.extra["iteration"])
        log(f"  fine-tuning resumed at iteration {start} from {checkpoint_path}")
    precision = training_precision(tune.precision, log)
    per_image = max(1, tune.batch_size // tune.images_per_batch)
    fg_per_image = max(1, round(per_image * tune.fg_fraction))
    (train_mode or network.train)()
    started, losses = time.perf_counter(), []

    def forward_backward(batch: torch.Tensor, labels: torch.Tensor, precision: str) -> torch.Tensor:
        """The mini-batch's loss and, when it is finite, its gradients."""
        with autocast(precision):
            loss = F.cross_entropy(network(batch).float(), labels)
        if torch.isfinite(loss):
            optimizer.zero_grad()
            loss.backward()
        return loss

    for iteration in range(start, tune.iterations):
        lr = step_lr(tune.lr, tune.lr_steps, iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        chosen = torch.randperm(len(records), generator=generator)[: tune.images_per_batch].tolist()
        inputs, labels, to_mine = [], [], []
        for index in chosen:
            record = records[index]
            labelled = windows[record.image_id]
            if tune.hard_mining_nms > 0:
                picked = (labelled.labels >= 0).nonzero().flatten()
            else:
                fg = (labelled.labels > 0).nonzero().flatten()
                bg = (labelled.labels == 0).nonzero().flatten()
                fg = fg[torch.randperm(len(fg), generator=generator)[:fg_per_image]]
                bg = bg[torch.randperm(len(bg), generator=generator)[: per_image - len(fg)]]
                picked = torch.cat([fg, bg])
            if len(picked) == 0:
                continue
            flipped = tune.flip and bool(torch.rand(1, generator=generator) < 0.5)
            batch = window_inputs(record, labelled.boxes[picked], flipped)
            if tune.hard_mining_nms > 0:
                to_mine.append((labelled, picked, batch))  # scored together below
                continue
            inputs.append(augment(batch, generator) if augment is not None else batch)
            labels.append(labelled.labels[picked])
        if to_mine:
            with autocast(precision):
                hardest = _hardest_windows(network, to_mine, per_image, tune.hard_mining_nms)
            (train_mode or network.train)()
            for (labelled, picked, batch), rows in zip(to_mine, hardest):
                inputs.append(augment(batch[rows], generator) if augment is not None else batch[rows])
                labels.append(labelled.labels[picked[rows]])
        done = iteration + 1
        if inputs:
            batch, batch_labels, dropout_state = torch.cat(inputs), torch.cat(labels), torch.get_rng_state()
            loss = forward_backward(batch, batch_labels, precision)
            if precision == "bf16" and not (torch.isfinite(loss) and gradients_finite(optimizer)):
                # As Fast R-CNN's training (fast_rcnn_training.py, where oneDNN's AMX weight
                # gradients are why): a bf16 step whose loss or gradients are not finite is
                # computed again in float32 (the same windows and dropout masks); only a
                # non-finite float32 loss stops the run.
                log(f"  fine-tune {done}: the loss or its gradients in bfloat16 are not finite (loss "
                    f"{loss.item()}); this step is computed again in float32")
                torch.set_rng_state(dropout_state)
                loss = forward_backward(batch, batch_labels, "fp32")
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"fine-tuning loss became {loss.item()} at iteration {done}; stopped. The last good checkpoint "
                    f"({checkpoint_path if checkpoint_path and checkpoint_path.exists() else 'none'}) is kept; "
                    "lower finetune.lr")
            optimizer.step()
            losses.append(loss.item())
        if checkpoint_path is not None and done % tune.checkpoint_every == 0 and done < tune.iterations:
            save_checkpoint(checkpoint_path, Checkpoint(
                model=network.state_dict(), optimizer=optimizer.state_dict(), rng_state=torch.get_rng_state(),
                generator_state=generator.get_state(), extra={"iteration": done}))
        if done % max(1, tune.iterations // 10) == 0 and losses:
            log(f"  fine-tune {done}/{tune.iterations}: loss {np.mean(losses[-50:]):.3f}, lr {lr:g} "
                f"({time.perf_counter() - started:.0f} s)")
    network.eval()


# Input values per forward pass of OHEM's scoring. The windows of several images
# go through the network together (SPP-net: the 2,000-4,000 pooled windows of 8
# images, up to 13 million values, in one pass instead of eight), and a whole-network input
# (R-CNN: 27,648 values per warped window) is scored image by image.
_SCORING_VALUES = 1 << 24


@torch.no_grad()
def _hardest_windows(network: nn.Module, images: Sequence[tuple[LabelledWindows, torch.Tensor, torch.Tensor]],
                     count: int, nms_iou: float) -> list[torch.Tensor]:
    """For each ``(labelled windows, picked rows, their inputs)`` of ``images``:
    the indices (into its inputs) of up to ``count`` windows with the highest
    loss under ``network`` in eval mode, after NMS at ``nms_iou`` over the
    losses (OHEM's selection: neighbouring windows have nearly equal losses,
    and one of them is as informative as all). Images are scored in groups of
    up to ``_SCORING_VALUES`` input values (one image at least)."""
    network.eval()
    groups, values = [[]], 0
    for labelled, picked, inputs in images:
        if groups[-1] and values + inputs.numel() > _SCORING_VALUES:
            groups.append([])
            values = 0
        groups[-1].append((labelled, picked, inputs))
        values += inputs.numel()
    chosen = []
    for group in groups:
        batch = torch.cat([inputs for _, _, inputs in group]) if len(group) > 1 else group[0][2]
        labels = torch.cat([labelled.labels[picked] for labelled, picked, _ in group])
        losses = F.cross_entropy(network(batch).float(), labels, reduction="none")
        for (labelled, picked, _), loss in zip(group, losses.split([len(picked) for _, picked, _ in group])):
            chosen.append(nms(labelled.boxes[picked].float(), loss, nms_iou)[:count])
    return chosen


def load_svms(path: Path) -> tuple[LinearSVMs, float]:
    state = load_weights(path)
    return LinearSVMs(state["weight"], state["bias"]), float(state["scale"])


def load_regressors(path: Path) -> BoxRegressors:
    state = load_weights(path)
    return BoxRegressors(state["weights"], float(state["scale"]))


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    if not bool(torch.isfinite(tensor).all()):
        raise TrainingDiverged(f"{name} has NaN or infinite weights (the fine-tuned features are not finite?); "
                               "nothing was written")


def svm_stage(path: Path, features: WindowFeatures, records: Sequence[ImageRecord], windows: dict[str, LabelledWindows],
              svm: SVMConfig, mining: MiningConfig, num_classes: int, log=print) -> tuple[LinearSVMs, float]:
    """The SVMs stored at ``path``, trained now unless a finished run left them."""
    if path.is_file():
        return load_svms(path)
    log("training per-class SVMs with hard-negative mining")
    svms, scale = train_svms(features, records, windows, svm, mining, num_classes, log)
    _check_finite("the SVMs", torch.cat([svms.weight.flatten(), svms.bias.flatten()]))
    save_weights(path, {"weight": svms.weight, "bias": svms.bias, "scale": torch.tensor(scale)})
    return svms, scale


def box_regression_stage(path: Path, features: WindowFeatures, records: Sequence[ImageRecord],
                         windows: dict[str, LabelledWindows], config: BoxRegressorConfig, num_classes: int,
                         log=print) -> BoxRegressors:
    """The box regressors stored at ``path``, trained now unless a finished run left them."""
    if path.is_file():
        return load_regressors(path)
    log("training box regressors")
    regressors = train_box_regression(features, records, windows, config, num_classes)
    _check_finite("the box regressors", regressors.weights)
    save_weights(path, {"weights": regressors.weights, "scale": torch.tensor(regressors.feature_scale)})
    return regressors


def scoring_stages(detector, run_dir: Path, records: Sequence[ImageRecord], windows: dict[str, LabelledWindows],
                   config, num_classes: int, seconds: dict[str, float], log=print) -> None:
    """SPP-net's and R-CNN's stages after fine-tuning: the per-class SVMs
    (``config.svm``, ``config.mining``; none when ``svm.train`` is false) on fc7 and the box regressors
    (``config.bbox``) on pool5 of ``detector.window_features``, each read
    from ``run_dir`` when a finished run left it; both go into
    ``detector.model`` and their seconds into ``seconds``."""
    clock = time.perf_counter()
    svms, svm_scale = None, 1.0
    if config.svm.train:
        svms, svm_scale = svm_stage(run_dir / "svm.safetensors", detector.window_features, records, windows,
                                    config.svm, config.mining, num_classes, log)
        seconds["SVMs"], clock = time.perf_counter() - clock, time.perf_counter()
    else:
        log("no SVMs (svm.train: false): the fine-tuned softmax scores the windows")
    regressors = box_regression_stage(run_dir / "bbox.safetensors", detector.window_features, records, windows,
                                      config.bbox, num_classes, log)
    seconds["box regression"] = time.perf_counter() - clock
    detector.model.svms, detector.model.svm_scale, detector.model.regressors = svms, svm_scale, regressors


STAGED_RUN_FILES = ("config.yaml", "classes.txt", "backbone.txt", "finetune.safetensors", "svm.safetensors",
                    "bbox.safetensors")


def read_staged_run(run_dir: Path, config_type, method: str):
    """A finished SPP-net or R-CNN run's config, classes, pinned trunk
    classifier (``load_classifier`` of its ``backbone.txt``, hash checked)
    and SVMs with their feature scale (``(None, 1.0)`` for a run trained
    with ``svm.train: false``); a missing stage file is named."""
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished {method} run: config.yaml is missing")
    config = from_dict(config_type, yaml.safe_load((run_dir / "config.yaml").read_text()))
    for name in STAGED_RUN_FILES:
        if not (run_dir / name).is_file() and (name != "svm.safetensors" or config.svm.train):
            raise FileNotFoundError(f"{run_dir} is not a finished {method} run: {name} is missing")
    classifier, _, _ = load_classifier(recorded_backbone(run_dir))
    svms = load_svms(run_dir / "svm.safetensors") if config.svm.train else (None, 1.0)
    return config, read_classes(run_dir), classifier, svms
