"""R-CNN detection, the baseline whose cost SPP-net removes (SPEC section 7).

Shapes: R windows of an image, S the warp side (the network's fixed input),
K object classes (+1 background), C trunk channels, B pooled bins, H fc width.

Every window is enlarged about its centre so that, once warped to S x S, it
has ``context`` pixels of image around it (R-CNN's 16 of 227), warped
(bilinear; outside the image the mean pixel, 0 after normalisation) and run
through the whole network: trunk -> the classifier's pooling -> fc6 -> fc7.
That is one forward pass per window, about 2000 per image, where SPP-net runs
the conv layers once per image.

Stages, each written to the run folder and skipped on ``--resume`` when done
(the same files as SPP-net's, see ``sppnet_detection``):

0. ``pretrain/``: without ``--backbone``, an SPP classifier is first trained
   on the training set's ground-truth and background crops; it supplies the
   architecture and the initial weights of the whole network.
1. proposals (cached by ``sppnet.proposals``).
2. ``finetune.safetensors``: the whole network (trunk, fc6, fc7 and a new
   (K+1)-way fc8) fine-tuned on warped windows: foreground IoU >= 0.5,
   background IoU in [bg_low, 0.5), 25% foreground per mini-batch of 128
   (R-CNN's 32 + 96), mirrored images too. Unlike SPP-net the conv layers are
   updated (``finetune.train_conv``; all but the first ``finetune.frozen_convs``).
3. ``svm.safetensors`` (not with ``svm.train: false``, as in the tiny preset,
   which scores with the softmax) and 4. ``bbox.safetensors``: the SPP-net
   stages (``detection_stages``), fed with fc7 and pool5 of warped windows.

Under torchrun (``sppnet.engine.distributed``): stage 0 is data-parallel
(DDP), stage 1 sharded over the ranks, and stages 2-4 run on rank 0 alone
while the other ranks wait, then load them from the run folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sppnet.data.images import load_image
from sppnet.proposals import ProposalSettings
from sppnet.data.records import DetectionDataset, ImageRecord
from sppnet.data.transforms import random_channel_order, to_tensor
from sppnet.engine import distributed
from sppnet.engine.checkpoint import load_weights, save_weights
from sppnet.engine.detection_stages import (
    MiningConfig,
    StagedRunDetector,
    TestConfig,
    check_svm_scorer,
    dataset_proposals,
    label_dataset,
)
from sppnet.engine.memory_cache import TRAINING_IMAGE_BYTES, MemoryCache
from sppnet.engine.pretrain import PretrainConfig, start_detector_run
from sppnet.engine.window_training import (
    WindowFinetuneConfig, finetune_on_windows, load_regressors, read_staged_run, scoring_stages,
)
from sppnet.models.box_regression import BoxRegressorConfig, BoxRegressors
from sppnet.models.detection.postprocess import empty_detections
from sppnet.models.detection.fast_rcnn import freeze_first_convs
from sppnet.models.detection.rcnn import RCNN, RCNNNetwork, warp_windows
from sppnet.models.svm import LinearSVMs, SVMConfig
from sppnet.ops import mirror_boxes

__all__ = [
    "RCNNConfig", "RCNNFinetuneConfig", "RCNNDetector",
    "train_rcnn", "load_rcnn",
]


@dataclass(frozen=True)
class RCNNFinetuneConfig(WindowFinetuneConfig):
    # batch_size 128 = R-CNN's 32 foreground + 96 background windows. R-CNN
    # drew each window of a batch from the whole set; drawing them from
    # images_per_batch images at a time keeps image decoding per iteration
    # bounded. R-CNN took every window below fg_threshold as background
    # (bg_low 0.0).
    train_conv: bool = True  # R-CNN fine-tunes the whole network; False: fc6, fc7, fc8 only (as SPP-net)
    # With train_conv, the first frozen_convs conv layers stay as pre-trained
    # (Fast R-CNN's train.frozen_convs: its small networks keep conv1). On
    # detect-rcnn-tiny, 1 makes a step 28% faster (no backward through conv1's
    # LRN) but costs 1.5 +- 1.1 mAP on three held-out sets (RESULTS.md, session 27).
    frozen_convs: int = 0
    # Each image's warped windows with their colour channels in one random order
    # (data.transforms.random_channel_order), as Fast R-CNN's train.channel_order
    # shuffles its whole training images.
    channel_order: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.frozen_convs, bool) or not isinstance(self.frozen_convs, int) or self.frozen_convs < 0:
            raise ValueError(f"finetune.frozen_convs must be an integer >= 0, got {self.frozen_convs!r}")


@dataclass(frozen=True)
class RCNNConfig(ProposalSettings):
    warp_size: int = 224  # the network's fixed input side (R-CNN's AlexNet: 227; ZF-5: 224)
    context: int = 16  # pixels of image context around the window in the warped frame
    window_batch: int = 128  # warped windows per forward pass at feature and test time
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: RCNNFinetuneConfig = field(default_factory=RCNNFinetuneConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    # R-CNN's box regression: lambda 1000 on windows with IoU > 0.6 (SPP-net: 4000, 0.5).
    bbox: BoxRegressorConfig = field(default_factory=lambda: BoxRegressorConfig(ridge=1000.0, min_overlap=0.6))
    test: TestConfig = field(default_factory=TestConfig)

    def __post_init__(self) -> None:
        for name in ("warp_size", "window_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RCNNConfig.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.context, bool) or not isinstance(self.context, int) or not 0 <= 2 * self.context < self.warp_size:
            raise ValueError(f"RCNNConfig.context must be an integer with 0 <= 2 * context < warp_size "
                             f"({self.warp_size}), got {self.context!r}")
        check_svm_scorer(self)


def _check_warp(network: RCNNNetwork, size: int, backbone: Path) -> None:
    """A no-SPP classifier only takes its own input size: say so up front."""
    try:
        with torch.no_grad():
            network.eval().features(torch.zeros(1, 3, size, size))
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"warp_size {size} does not fit the classifier {backbone}: {error}") from None


@dataclass
class RCNNDetector(StagedRunDetector):
    """A trained R-CNN run as ``detect_dataset`` uses it: the model
    (``sppnet.models.detection.RCNN``) on each image file, decoded here."""

    model: RCNN
    config: RCNNConfig

    def window_features(self, record: ImageRecord, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool5 ``(R, C * B)`` and fc7 ``(R, H)`` of the image's warped windows."""
        return self.model.window_features(to_tensor(load_image(record.image_path)), boxes)

    def detect(self, record: ImageRecord, proposals: torch.Tensor, box_regression: bool | None = None) -> dict:
        """``{"boxes" (D, 4), "labels" (D,), "scores" (D,)}`` for one image."""
        boxes = proposals.float().reshape(-1, 4)
        if len(boxes) == 0:
            return empty_detections()
        regression = self.test.box_regression if box_regression is None else box_regression
        return self.model.detect_image(to_tensor(load_image(record.image_path)), boxes, regression)


def _model(network: RCNNNetwork, svms: LinearSVMs | None, svm_scale: float, regressors: BoxRegressors | None,
           config: RCNNConfig) -> RCNN:
    return RCNN(network.eval(), svms, svm_scale, regressors, config.warp_size, config.context, config.window_batch,
                config.test.nms, config.test.top_k)


def _train_mode(network: RCNNNetwork, train_conv: bool) -> None:
    network.train()
    for module in network.trunk.modules():
        # Batch-norm statistics stay the pre-trained ones: a batch of windows
        # from a few images is a poor sample of them.
        if isinstance(module, nn.modules.batchnorm._BatchNorm) or not train_conv:
            module.eval()


def _finetune(network: RCNNNetwork, train: DetectionDataset, windows: dict, config: RCNNConfig, log=print,
              checkpoint: Path | None = None) -> None:
    """Fine-tune on warped windows: the whole network but its first
    ``finetune.frozen_convs`` conv layers, or with ``finetune.train_conv``
    False fc6, fc7 and fc8 only."""
    tune = config.finetune

    decoded = MemoryCache(lambda path: to_tensor(load_image(path)), TRAINING_IMAGE_BYTES)

    def warped_windows(record: ImageRecord, boxes: torch.Tensor, flipped: bool) -> torch.Tensor:
        # Images with proposals were decoded by the proposal stage (its
        # cache is keyed by file content), so they load here too.
        image = decoded(record.image_path)
        if flipped:
            image, boxes = image.flip(-1), mirror_boxes(boxes, record.width)
        return warp_windows(image, boxes, config.warp_size, config.context)

    for parameter in network.trunk.parameters():
        parameter.requires_grad_(tune.train_conv)
    try:
        if tune.train_conv:
            freeze_first_convs(network.trunk, tune.frozen_convs)
        finetune_on_windows(network, [p for p in network.parameters() if p.requires_grad], train.images, windows,
                            tune, warped_windows, checkpoint, log, lambda: _train_mode(network, tune.train_conv),
                            augment=random_channel_order if tune.channel_order else None)
    finally:
        for parameter in network.parameters():
            parameter.requires_grad_(True)


def train_rcnn(
    config: RCNNConfig, train: DetectionDataset, data_root: Path, run_dir: Path, backbone: Path | None = None,
    resume: bool = False, log=print,
) -> RCNNDetector:
    """Run every stage that is not done yet; returns the trained detector.

    In a process group (torchrun) every rank calls this with the same
    arguments: pre-training is data-parallel (DDP), proposals are computed
    sharded, and fine-tuning, SVMs and box regression run on rank 0 while the
    others wait (each rank returns the finished detector)."""
    run_dir = Path(run_dir)
    log = distributed.main_only(log)
    main = distributed.is_main()
    classifier_run, classifier = start_detector_run(config, train, run_dir, backbone, config.finetune.seed, resume,
                                                    log, data_root)
    torch.manual_seed(config.finetune.seed)  # fc8's initial weights: the same whatever ran before in this process
    network = RCNNNetwork(classifier, train.num_classes)
    _check_warp(network, config.warp_size, Path(classifier_run))
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    proposals = dataset_proposals(train, config.proposal_config, data_root, log)
    seconds["proposals"], clock = time.perf_counter() - clock, time.perf_counter()
    if not main:  # fine-tuning, SVMs and box regression run on rank 0; wait, then read them from the run folder
        distributed.wait_for_main()
        return load_rcnn(run_dir)
    tune = config.finetune
    windows = label_dataset(train, proposals, tune.fg_threshold, (tune.bg_low, tune.bg_high))

    finetuned = run_dir / "finetune.safetensors"
    if finetuned.is_file():
        network.load_state_dict(load_weights(finetuned))
        network.eval()
    else:
        log(f"fine-tuning {'the whole network' if tune.train_conv else 'fc6, fc7, fc8'} on warped windows "
            f"({tune.iterations} iterations)")

        checkpoint = run_dir / "finetune-checkpoint.safetensors"
        _finetune(network, train, windows, config, log, checkpoint)
        save_weights(finetuned, network.state_dict())
        checkpoint.unlink(missing_ok=True)
    seconds["fine-tuning"], clock = time.perf_counter() - clock, time.perf_counter()
    detector = RCNNDetector(_model(network, None, 1.0, None, config), config, train.classes, seconds)
    scoring_stages(detector, run_dir, train.images, windows, config, train.num_classes, seconds, log)
    log(f"R-CNN training stages done in {time.perf_counter() - started:.0f} s (after pre-training): "
        + ", ".join(f"{stage} {value:.1f} s" for stage, value in seconds.items()))
    distributed.wait_for_main()  # let the other ranks read the finished run
    return detector


def load_rcnn(run_dir: str | Path) -> RCNNDetector:
    run_dir = Path(run_dir)
    config, classes, classifier, (svms, svm_scale) = read_staged_run(run_dir, RCNNConfig, "R-CNN")
    # The classifier gives the architecture; every weight is the fine-tuned one.
    network = RCNNNetwork(classifier, len(classes))
    network.load_state_dict(load_weights(run_dir / "finetune.safetensors"))
    return RCNNDetector(_model(network, svms, svm_scale, load_regressors(run_dir / "bbox.safetensors"), config),
                        config, classes)
