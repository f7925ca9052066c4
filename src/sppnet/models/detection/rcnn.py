"""R-CNN (SPEC section 6): its network (each window warped to the network's
fixed input with context, then the whole classifier on the batch of windows)
and the whole detector at test time.

Shapes: R windows (xyxy, continuous pixels of the image), S the warp size,
C * B the pooled length, H the fc width, K + 1 classes with background.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sppnet.data.transforms import normalise
from sppnet.fast_path import as_input, autocast, prepare
from sppnet.models.box_regression import BoxRegressors
from sppnet.models.classifier import SPPClassifier
from sppnet.models.detection.postprocess import (
    MirrorView, check_test_call, empty_detections, postprocess, refine_windows,
)
from sppnet.models.scoring import check_scorer, window_scores
from sppnet.models.svm import LinearSVMs
from sppnet.ops import mirror_boxes
from sppnet.timing import StageTimer, stage

__all__ = ["RCNNNetwork", "RCNN", "context_boxes", "warp_windows"]


def context_boxes(boxes: torch.Tensor, size: int, context: int) -> torch.Tensor:
    """Boxes ``(R, 4)`` enlarged about their centres by ``size / (size - 2 *
    context)``: warped to ``size`` x ``size``, the original box then fills the
    middle ``size - 2 * context`` pixels, with ``context`` pixels around it."""
    if not 0 <= 2 * context < size:
        raise ValueError(f"context must satisfy 0 <= 2 * context < size, got context={context}, size={size}")
    factor = size / (size - 2 * context)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
    return torch.cat([centres - half, centres + half], dim=1)


def warp_windows(image: torch.Tensor, boxes: torch.Tensor, size: int, context: int = 0) -> torch.Tensor:
    """Normalised image ``(3, H, W)`` and windows ``(R, 4)`` -> ``(R, 3, size, size)``.

    Each window, enlarged by ``context_boxes``, is sampled bilinearly at the
    centres of a size x size grid over it (as R-CNN's imresize with
    antialiasing off); the image is extended by zeros, the mean pixel after
    normalisation, so parts of a window outside the image are mean-filled.
    One ``grid_sample`` call samples every window: the same values as
    torchvision's ``roi_align`` (aligned, one sample per bin) on the image
    padded by a pixel of zeros, which loops over the windows and took 2.4x
    as long for a training step's 16 windows of 96 x 96."""
    if image.dim() != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    # The sample positions in float64, rounded once when handed over (a window's pixel coordinates
    # are hundreds; float32 arithmetic on them would move samples by ~1e-5 pixels).
    windows = context_boxes(boxes.to(torch.float64).reshape(-1, 4), size, context)
    count, (height, width) = len(windows), image.shape[-2:]
    centres = (torch.arange(size, dtype=torch.float64, device=image.device) + 0.5) / size  # of the bins, in [0, 1]
    # Pixel coordinates (pixel i covers [i, i + 1)) -> grid_sample's [-1, 1] over the image's edges (align_corners=False).
    xs = (windows[:, 0:1] + centres * (windows[:, 2:3] - windows[:, 0:1])) * (2 / width) - 1  # (R, size)
    ys = (windows[:, 1:2] + centres * (windows[:, 3:4] - windows[:, 1:2])) * (2 / height) - 1
    grid = torch.stack([xs[:, None, :].expand(count, size, size), ys[:, :, None].expand(count, size, size)], dim=-1)
    grid = grid.to(image.dtype)
    warped = F.grid_sample(image[None], grid.reshape(1, count * size, size, 2), mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    return warped.reshape(image.shape[0], count, size, size).transpose(0, 1).contiguous()


class RCNNNetwork(nn.Module):
    """The whole network on warped windows ``(R, 3, S, S)``: the classifier's
    trunk and pooling (it pools the fixed-size map), fc6, fc7, and a new
    (K+1)-way fc8 for fine-tuning, initialised N(0, 0.01)."""

    def __init__(self, classifier: SPPClassifier, num_classes: int) -> None:
        super().__init__()
        self.trunk, self.pool, self.fc6, self.fc7 = classifier.trunk, classifier.spp, classifier.fc6, classifier.fc7
        self.fc8 = nn.Linear(classifier.fc7[0].out_features, num_classes)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def features(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool5 ``(R, C * B)`` and fc7 ``(R, H)``."""
        pooled = self.pool(self.trunk(windows))
        return pooled, self.fc7(self.fc6(pooled))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """logits ``(R, K + 1)``."""
        return self.fc8(self.features(windows)[1])


class RCNN(nn.Module):
    """R-CNN's detector at test time (SPEC section 6), on tensors:
    ``model(images, proposals)`` -> ``[{"boxes" (D, 4), "labels" (D,),
    "scores" (D,)}]``, torchvision's detection contract, for ``images`` float
    ``[3, H, W]`` in [0, 1] and ``proposals`` ``(R, 4)`` xyxy in their pixels.

    Every window is warped (``warp_windows``: ``warp_size`` with ``context``)
    and goes through the whole ``network``, ``window_batch`` at a time; then
    the per-class scorer (the SVMs or fc8's softmax, ``scorer``), per-class
    NMS and box regression on pool5 (``postprocess``). Training is staged
    (``sppnet.engine.rcnn.train_rcnn``: fine-tuning on warped windows, SVMs
    with hard negatives, box regression), so there is no training forward."""

    def __init__(self, network: RCNNNetwork, svms: LinearSVMs | None, svm_scale: float,
                 regressors: BoxRegressors | None, warp_size: int, context: int, window_batch: int, nms: float,
                 top_k: int, scorer: str = "svm", flip: bool = False) -> None:
        super().__init__()
        self.network, self.svms = network, svms
        self.svm_scale = float(svm_scale)
        self.regressors = regressors
        self.warp_size, self.context, self.window_batch = warp_size, context, window_batch
        self.nms, self.top_k = nms, top_k
        self.nms_sigma: float | None = None  # Gaussian soft-NMS instead of nms (TestConfig.nms_sigma)
        self.box_vote: float | None = None  # box voting's IoU (TestConfig.box_vote)
        self.regress_first = False  # NMS over the regressed windows (TestConfig.regress_first)
        self.refine = 0  # windows per class regressed and scored again (TestConfig.refine)
        self.scorer = check_scorer(scorer)
        self.flip = flip  # flip testing: each window also warped from the mirrored image (postprocess)
        self.precision = "fp32"  # "bf16": the CPU fast path (bfloat16 autocast, channels-last convs)
        self.timer: StageTimer | None = None  # set to collect seconds per stage

    def set_precision(self, precision: str) -> RCNN:
        prepare(self.network.trunk, precision)
        self.precision = precision
        return self

    @torch.no_grad()
    def window_features(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool5 ``(R, C * B)`` and fc7 ``(R, H)`` of the warped windows of a
        normalised image ``[3, H, W]``, in batches of ``window_batch``."""
        boxes = boxes.float().reshape(-1, 4)
        network, timer = self.network.eval(), self.timer
        pooled, fc7 = [], []
        # An empty box list still runs one (empty) batch, for the feature widths.
        for start in range(0, max(len(boxes), 1), self.window_batch):
            with autocast(self.precision):
                with stage(timer, "conv"):
                    warped = warp_windows(image, boxes[start: start + self.window_batch], self.warp_size, self.context)
                    maps = network.trunk(as_input(warped, self.precision))
                with stage(timer, "pooling"):
                    p = network.pool(maps)
                with stage(timer, "fc"):
                    f = network.fc7(network.fc6(p))
            pooled.append(p.float())
            fc7.append(f.float())
        return torch.cat(pooled), torch.cat(fc7)

    @torch.no_grad()
    def detect_image(self, image: torch.Tensor, boxes: torch.Tensor, box_regression: bool = True) -> dict:
        """One normalised image ``[3, H, W]`` and its windows ``(R, 4)`` -> its detections."""
        boxes = boxes.float().reshape(-1, 4)
        if len(boxes) == 0:
            return empty_detections()
        size = tuple(image.shape[-2:])
        mirrored = image.flip(-1) if self.flip else None
        scores, features, mirror = self._scored(image, mirrored, boxes)
        regressors = self.regressors if box_regression else None
        if self.refine and regressors is not None:  # the regressed windows warped and through the network too
            boxes, scores, features, mirror = refine_windows(
                boxes, scores, features, mirror, size, self.refine, regressors,
                lambda moved: self._scored(image, mirrored, moved), self.timer)
        return postprocess(boxes, scores, size, self.nms, self.top_k, regressors, features, self.timer, mirror,
                           self.nms_sigma, self.box_vote, self.regress_first)

    def _scored(self, image: torch.Tensor, mirrored: torch.Tensor | None, boxes: torch.Tensor):
        """Windows ``(R, 4)`` scored in the image (and, mirrored, in its mirror
        ``mirrored`` with flip testing): ``(scores (R, K), pool5 of rows,
        MirrorView or None)``."""
        pooled, scores = self._scores(image, boxes)
        mirror = None
        if mirrored is not None:
            width = float(image.shape[-1])
            mirror_pooled, mirror_scores = self._scores(mirrored, mirror_boxes(boxes, width))
            mirror = MirrorView(mirror_scores, lambda window: mirror_pooled[window], width)
        return scores, (lambda window: pooled[window]), mirror

    def _scores(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool5 ``(R, C * B)`` and the scorer's ``(R, K)`` of the windows."""
        pooled, fc7 = self.window_features(image, boxes)
        with stage(self.timer, "classifier"):
            return pooled, window_scores(fc7, self.scorer, self.svms, self.svm_scale, self.network.fc8)

    @torch.no_grad()
    def forward(self, images: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor],
                targets: Sequence[dict] | None = None) -> list[dict]:
        check_test_call(self, images, proposals, targets, "sppnet.engine.rcnn.train_rcnn")
        return [self.detect_image(normalise(image), boxes) for image, boxes in zip(images, proposals)]
