"""Fast R-CNN (SPEC section 6): one conv pass per image and scale, RoI pooling,
and a two-output head trained end to end with a multi-task loss.

Shapes: N images, R RoIs (all images), K object classes (+1 background:
``num_classes`` = K + 1), C trunk channels, B = sum(n * n) bins of the RoI
pooling levels ((6,) or (7,) is Fast R-CNN's one-level RoI pooling; the SPP
levels (6, 3, 2, 1) are an option), H fc width.

The model follows torchvision's detection contract: ``forward(images,
proposals, targets=None)`` with ``images`` a list of float ``[3, H, W]``
tensors in [0, 1], ``proposals`` a list of ``[R_i, 4]`` xyxy boxes in the
original image's pixels and, in training, ``targets`` a list of dicts with
``boxes`` ``[G_i, 4]`` and ``labels`` ``[G_i]`` (1..K). Training returns
``{"loss_classifier", "loss_box_reg"}``; evaluation returns per image
``{"boxes" [D, 4], "labels" [D], "scores" [D]}`` in original pixels.

Each image is normalised and resized by ``scale_image`` (the one image ->
network-input step of every detector), RoIs are mapped to cells with the
"fast-rcnn" rounding rule and pooled by ``roi_spp``: the same op SPP-net uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sppnet.data.transforms import normalise, scale_image
from sppnet.fast_path import as_input, autocast, prepare
from sppnet.models.classifier import SPPClassifier
from sppnet.models.windows import WindowPooler, label_windows, one_image_rois, pooled_fc6
from sppnet.ops import (BoxCoder, boxes_to_cells, boxes_to_rois, class_nms, clip_boxes, mirror_boxes, nms, roi_spp,
                        vote_boxes)
from sppnet.ops.tracing import shape_of
from sppnet.timing import StageTimer, stage

__all__ = ["RoISampling", "FastRCNNHead", "FastRCNN", "smooth_l1", "fast_rcnn_loss", "roi_losses", "sample_rois",
           "freeze_first_convs", "fc6_for_levels", "load_head_fc"]

FAST_RCNN_STDS = (0.1, 0.1, 0.2, 0.2)


@dataclass(frozen=True)
class RoISampling:
    """Hierarchical sampling (SPEC section 6): per image ``rois_per_image``
    RoIs, at most ``fg_fraction`` of them foreground (IoU >= fg_threshold),
    the rest background (IoU in [bg_low, bg_high)); ground truth is included."""

    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_threshold: float = 0.5
    bg_low: float = 0.1
    bg_high: float = 0.5
    # Online hard example mining (Shrivastava et al. 2016): 0 = off; otherwise every
    # labelled RoI of the image is scored by the head (dropout off), NMS at this IoU
    # over the RoIs' losses thins neighbours, and the rois_per_image RoIs with the
    # highest loss are trained on (fg_fraction unused).
    hard_mining_nms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hard_mining_nms <= 1.0:
            raise ValueError(f"sampling.hard_mining_nms must be in [0, 1] (0: off), got {self.hard_mining_nms!r}")


def smooth_l1(x: torch.Tensor) -> torch.Tensor:
    """Elementwise 0.5 x^2 if |x| < 1 else |x| - 0.5."""
    absolute = x.abs()
    return torch.where(absolute < 1, 0.5 * x * x, absolute - 0.5)


def fast_rcnn_loss(class_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
                   box_targets: torch.Tensor, box_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the R sampled RoIs, and ``box_weight`` times the
    smooth-L1 of the true class's 4 deltas, summed over the foreground RoIs
    and divided by R. ``box_deltas`` (R, 4 (K+1)); ``box_targets`` (R, 4),
    normalised, read only where ``labels > 0``."""
    classification = F.cross_entropy(class_logits, labels)
    foreground = (labels > 0).nonzero().flatten()
    if len(foreground) == 0:
        return classification, box_deltas.sum() * 0
    box = smooth_l1(_true_class_deltas(box_deltas, labels, foreground) - box_targets[foreground]).sum() / len(labels)
    return classification, box_weight * box


def _true_class_deltas(box_deltas: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The 4 deltas of each of ``rows``' own class: ``(len(rows), 4)``."""
    columns = labels[rows, None] * 4 + torch.arange(4, device=labels.device)
    return box_deltas[rows[:, None], columns]


def roi_losses(class_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor, box_targets: torch.Tensor,
               box_weight: float = 1.0) -> torch.Tensor:
    """Each RoI's own multi-task loss ``(R,)``: its cross-entropy plus, for a
    foreground RoI, ``box_weight`` times the smooth-L1 of its class's deltas
    (what online hard example mining ranks RoIs by)."""
    losses = F.cross_entropy(class_logits, labels, reduction="none")
    foreground = (labels > 0).nonzero().flatten()
    if len(foreground):
        box = smooth_l1(_true_class_deltas(box_deltas, labels, foreground) - box_targets[foreground]).sum(1)
        losses = losses.index_add(0, foreground, box_weight * box)
    return losses


def sample_rois(proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, num_classes: int,
                sampling: RoISampling, box_coder: BoxCoder, generator: torch.Generator | None = None,
                gt_difficult: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's training RoIs: ``(boxes (S, 4), labels (S,), box targets (S, 4))``
    with S <= rois_per_image (with hard mining: every labelled RoI); ground
    truth boxes join the proposals first."""
    windows = label_windows(proposals, gt_boxes, gt_labels, num_classes, sampling.fg_threshold,
                            (sampling.bg_low, sampling.bg_high), gt_difficult)
    if sampling.hard_mining_nms > 0:  # every labelled RoI: the loss chooses (FastRCNN.losses)
        chosen = (windows.labels >= 0).nonzero().flatten()
        boxes, labels = windows.boxes[chosen], windows.labels[chosen]
        targets = torch.zeros(len(chosen), 4)
        foreground = labels > 0
        if bool(foreground.any()):
            targets[foreground] = box_coder.encode(boxes[foreground],
                                                   gt_boxes.float()[windows.gt_index[chosen[foreground]]])
        return boxes, labels, targets
    foreground = (windows.labels > 0).nonzero().flatten()
    background = (windows.labels == 0).nonzero().flatten()
    fg_count = min(len(foreground), round(sampling.rois_per_image * sampling.fg_fraction))
    foreground = foreground[torch.randperm(len(foreground), generator=generator)[:fg_count]]
    background = background[torch.randperm(len(background), generator=generator)[: sampling.rois_per_image - fg_count]]
    chosen = torch.cat([foreground, background])
    boxes, labels = windows.boxes[chosen], windows.labels[chosen]
    targets = torch.zeros(len(chosen), 4)
    if fg_count:
        targets[:fg_count] = box_coder.encode(boxes[:fg_count], gt_boxes.float()[windows.gt_index[foreground]])
    return boxes, labels, targets


def freeze_first_convs(trunk: nn.Module, count: int) -> None:
    """Stop gradients into the first ``count`` conv layers of ``trunk`` (Fast
    R-CNN keeps conv1 fixed: its low-level filters are generic)."""
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    if not 0 <= count <= len(convs):
        raise ValueError(f"frozen_convs must be in [0, {len(convs)}] for this trunk, got {count}")
    for conv in convs[:count]:
        for parameter in conv.parameters():
            parameter.requires_grad_(False)


class FastRCNNHead(nn.Module):
    """fc6 -> fc7 -> {cls_score (K+1), bbox_pred (4 (K+1))} on pooled RoIs ``(R, C * B)``."""

    def __init__(self, fc6: nn.Sequential, fc7: nn.Sequential, num_classes: int) -> None:
        super().__init__()
        self.fc6, self.fc7 = fc6, fc7
        hidden = fc7[0].out_features if isinstance(fc7[0], nn.Linear) else fc7[0][-1].out_features
        self.cls_score = nn.Linear(hidden, num_classes)
        self.bbox_pred = nn.Linear(hidden, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    @property
    def num_classes(self) -> int:
        return self.cls_score.out_features

    def features(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc7(self.fc6(pooled))

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.features(pooled)
        return self.cls_score(hidden), self.bbox_pred(hidden)


class FastRCNN(nn.Module):
    """``trunk`` (with ``geometry``), ``head``; ``scales`` are the test
    scales (shorter sides; several = an image pyramid, each RoI pooled at
    the scale where its area is closest to ``window_target`` squared),
    ``train_scales`` the scales one is drawn from per training image."""

    def __init__(self, trunk: nn.Module, head: FastRCNNHead, levels: Sequence[int] = (6,), scales: Sequence[int] = (600,),
                 max_side: int | None = 1000, train_scales: Sequence[int] | None = None, window_target: float = 224.0,
                 sampling: RoISampling = RoISampling(), box_stds: Sequence[float] = FAST_RCNN_STDS,
                 box_weight: float = 1.0, nms: float = 0.3, top_k: int = 100, flip: bool = False) -> None:
        super().__init__()
        if not scales or any(s < 16 for s in scales):
            raise ValueError(f"scales must be a non-empty list of sides >= 16, got {scales}")
        self.trunk, self.head = trunk, head
        self.levels = tuple(levels)
        self.scales = tuple(scales)
        self.train_scales = tuple(train_scales or scales)
        self.max_side = max_side
        self.window_target = window_target
        self.sampling = sampling
        self.box_coder = BoxCoder(stds=tuple(box_stds))
        self.box_weight = box_weight
        self.nms, self.top_k = nms, top_k
        self.nms_sigma: float | None = None  # Gaussian soft-NMS instead of nms (TestConfig.nms_sigma)
        self.box_vote: float | None = None  # box voting's IoU (TestConfig.box_vote)
        self.flip = flip  # flip testing: each RoI also scored in the mirrored image, probabilities and boxes averaged
        self.timer: StageTimer | None = None  # set to collect seconds per stage
        self.precision = "fp32"  # inference precision: "bf16" is the CPU fast path (sppnet.fast_path)
        self.fc6_block = 1024  # RoIs pooled and multiplied by fc6 at a time in inference (pooled_fc6)

    def set_precision(self, precision: str) -> FastRCNN:
        """Inference in ``"fp32"`` or ``"bf16"`` (autocast, channels-last convs)."""
        prepare(self.trunk, precision)
        self.precision = precision
        return self

    def train(self, mode: bool = True) -> FastRCNN:
        super().train(mode)
        # Batch statistics of 2 images are useless: normalisation layers of a
        # pretrained trunk (ResNet) stay frozen.
        for module in self.trunk.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def _check(self, images, proposals, targets) -> None:
        if len(images) != len(proposals):
            raise ValueError(f"got {len(images)} images but {len(proposals)} proposal sets")
        for index, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image {index} must be a [3, H, W] tensor, got shape {tuple(image.shape)}")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"got {len(images)} images but {len(targets)} targets")

    def feature_maps(self, images: Sequence[torch.Tensor], scales: Sequence[int]) -> tuple[torch.Tensor, list[float]]:
        """Images (each resized to its own scale) -> one padded conv batch
        ``(N, C, h, w)`` and each image's resize factor."""
        resized, factors = [], []
        for image, scale in zip(images, scales):
            scaled, factor = scale_image(normalise(image), scale, self.max_side)
            resized.append(scaled)
            factors.append(factor)
        height = max(r.shape[1] for r in resized)
        width = max(r.shape[2] for r in resized)
        batch = resized[0].new_zeros(len(resized), 3, height, width)
        for index, scaled in enumerate(resized):
            batch[index, :, : scaled.shape[1], : scaled.shape[2]] = scaled
        return self.trunk(as_input(batch, self.precision)), factors

    def pool(self, features: torch.Tensor, boxes_per_image: Sequence[torch.Tensor]) -> torch.Tensor:
        """Boxes in input pixels of each image of ``features`` -> pooled ``(R, C * B)``."""
        rois = boxes_to_rois(boxes_per_image, self.trunk.geometry, "fast-rcnn", feature_size=features.shape[-2:])
        return roi_spp(features, rois.to(features.device), self.levels)

    def forward(self, images: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor], targets: Sequence[dict] | None = None):
        self._check(images, proposals, targets)
        if self.training:
            if targets is None:
                raise ValueError("training needs targets (a dict with boxes and labels per image)")
            return self.losses(images, proposals, targets)
        return self.predict(images, proposals)

    def sampled_rois(self, images, proposals, targets, generator: torch.Generator | None = None):
        """Each image at a training scale drawn from ``generator``, its RoIs sampled:
        the conv batch, each image's RoI boxes (in its scaled pixels), and the
        labels and box targets of all RoIs, image after image."""
        scales = [self.train_scales[int(torch.randint(len(self.train_scales), (1,), generator=generator))] for _ in images]
        features, factors = self.feature_maps(images, scales)
        boxes, labels, box_targets = [], [], []
        for image_proposals, target, factor in zip(proposals, targets, factors):
            sampled = sample_rois(_valid(image_proposals), target["boxes"], target["labels"], self.head.num_classes,
                                  self.sampling, self.box_coder, generator, target.get("difficult"))
            boxes.append(sampled[0] * factor)
            labels.append(sampled[1])
            box_targets.append(sampled[2])
        return features, boxes, torch.cat(labels).to(features.device), torch.cat(box_targets).to(features.device)

    def losses(self, images, proposals, targets, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        features, boxes, labels, box_targets = self.sampled_rois(images, proposals, targets, generator)
        if self.sampling.hard_mining_nms > 0:
            # Every RoI is pooled outside the graph to be scored; only the chosen ones are pooled
            # again with gradients, so backward does not carry zero rows for the rest through roi_spp.
            with torch.no_grad():
                kept = self._hardest_rois(self.pool(features, boxes), boxes, labels, box_targets)
            offsets = torch.tensor([0] + [len(image_boxes) for image_boxes in boxes[:-1]]).cumsum(0)
            hardest = torch.cat([rows + offset for rows, offset in zip(kept, offsets)]).to(features.device)
            boxes = [image_boxes[rows] for image_boxes, rows in zip(boxes, kept)]
            labels, box_targets = labels[hardest], box_targets[hardest]
        pooled = self.pool(features, boxes)
        class_logits, box_deltas = self.head(pooled)
        # float32 losses under bf16 autocast too (a no-op in float32)
        loss_classifier, loss_box = fast_rcnn_loss(class_logits.float(), box_deltas.float(), labels,
                                                   box_targets.float(), self.box_weight)
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box}

    @torch.no_grad()
    def _hardest_rois(self, pooled: torch.Tensor, boxes: Sequence[torch.Tensor], labels: torch.Tensor,
                      box_targets: torch.Tensor) -> list[torch.Tensor]:
        """Per image, the indices into its ``boxes`` (rows of ``pooled``, image
        after image) to train on under online hard example mining: up to
        ``rois_per_image`` RoIs of highest loss (head in eval mode), highest
        first, after NMS at ``hard_mining_nms`` over those losses."""
        was_training = self.head.training
        self.head.eval()
        # The head's parts, not head(...): its forward hooks count the RoIs trained on.
        hidden = self.head.features(pooled)
        losses = roi_losses(self.head.cls_score(hidden).float(), self.head.bbox_pred(hidden).float(), labels,
                            box_targets.float(), self.box_weight)
        self.head.train(was_training)
        chosen, start = [], 0
        for image_boxes in boxes:
            end = start + len(image_boxes)
            kept = nms(image_boxes.float(), losses[start:end].cpu(), self.sampling.hard_mining_nms)
            chosen.append(kept[: self.sampling.rois_per_image])
            start = end
        return chosen

    @torch.no_grad()
    def score(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image, its RoIs (R, 4) -> class probabilities (R, K+1) and
        per-class boxes (R, K+1, 4) after regression, in original pixels, clipped."""
        with autocast(self.precision, image.device):
            return self._score(image, boxes)

    def _score(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities, per_class = self._score_view(image, boxes)
        if self.flip:  # the mirrored image's probabilities and boxes (mirrored back), averaged in
            width = float(image.shape[-1])
            mirror_probabilities, mirror_per_class = self._score_view(image.flip(-1), mirror_boxes(boxes, width))
            mirrored_back = mirror_boxes(mirror_per_class.reshape(-1, 4), width).reshape(per_class.shape)
            probabilities = (probabilities + mirror_probabilities) / 2
            per_class = (per_class + mirrored_back) / 2
        return probabilities, per_class

    def _score_view(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        timer = self.timer
        with stage(timer, "conv"):
            maps = [self.feature_maps([image], [scale]) for scale in self.scales]
        factors = [factor[0] for _, factor in maps]
        with stage(timer, "pooling"):
            pooler = WindowPooler.from_boxes([features for features, _ in maps], factors, boxes, self.trunk.geometry,
                                             self.levels, "fast-rcnn", self.window_target)
        hidden = pooled_fc6(pooler, self.head.fc6, self.fc6_block, timer)  # RoIs pooled and multiplied by fc6 in blocks
        with stage(timer, "fc"):
            hidden = self.head.fc7(hidden)
        with stage(timer, "classifier"):
            return self.class_outputs(hidden, boxes, tuple(image.shape[-2:]))

    def class_outputs(self, hidden: torch.Tensor, boxes: torch.Tensor, image_size) -> tuple[torch.Tensor, torch.Tensor]:
        """fc7 ``(R, H)`` of windows ``boxes`` -> class probabilities ``(R,
        K+1)`` and per-class boxes ``(R, K+1, 4)`` regressed and clipped to
        ``image_size`` (height, width; tensors while tracing)."""
        probabilities = F.softmax(self.head.cls_score(hidden).float(), dim=1)
        deltas = self.head.bbox_pred(hidden).float()
        per_class = self.box_coder.decode(deltas, boxes).reshape(-1, self.head.num_classes, 4)
        return probabilities, clip_boxes(per_class, image_size)

    def score_resized(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``score`` at one scale on an image already resized and normalised,
        ``(1, 3, H, W)``, with ``boxes (R, 4)`` in its pixels: the graph
        ``sppnet.export`` traces (sizes stay tensors, all RoIs pooled at once)."""
        features = self.trunk(image)
        cells = boxes_to_cells(boxes, self.trunk.geometry, "fast-rcnn", feature_size=shape_of(features)[2:])
        hidden = self.head.features(roi_spp(features, one_image_rois(cells), self.levels))
        return self.class_outputs(hidden, boxes, shape_of(image)[2:])

    @torch.no_grad()
    def predict(self, images: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor],
                box_regression: bool = True) -> list[dict[str, torch.Tensor]]:
        results = []
        for image, image_proposals in zip(images, proposals):
            boxes = _valid(image_proposals).to(image.device)
            if len(boxes) == 0:
                results.append({"boxes": image.new_zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                                "scores": image.new_zeros(0)})
                continue
            probabilities, per_class = self.score(image, boxes)
            with stage(self.timer, "nms"):
                chosen = per_class[:, 1:] if box_regression else clip_boxes(boxes, tuple(image.shape[-2:]))
                _, labels, out_boxes, scores = class_nms(chosen, probabilities[:, 1:], self.nms, self.top_k,
                                                         self.nms_sigma)
                if self.box_vote is not None:
                    out_boxes = vote_boxes(out_boxes, labels, chosen, probabilities[:, 1:], self.box_vote)
            results.append({"boxes": out_boxes, "labels": labels, "scores": scores})
        return results


def _valid(boxes: torch.Tensor) -> torch.Tensor:
    """Proposals with positive width and height (others cannot be encoded)."""
    boxes = boxes.float().reshape(-1, 4)
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def fc6_for_levels(classifier: SPPClassifier, levels: tuple[int, ...]) -> nn.Sequential:
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
    columns = _level_columns(channels, source, levels)
    restricted = nn.Linear(len(columns), linear.out_features)
    with torch.no_grad():
        restricted.weight.copy_(linear.weight[:, columns])
        restricted.bias.copy_(linear.bias)
    return nn.Sequential(restricted, *list(fc6)[1:])


def load_head_fc(classifier: SPPClassifier, head: FastRCNNHead, levels: tuple[int, ...]) -> None:
    """The inverse of ``fc6_for_levels``: ``classifier``'s fc6 and fc7 set to
    ``head``'s (a Fast R-CNN that pooled at ``levels``). fc6's input columns of
    those levels are copied and those of the classifier's other pyramid levels
    zeroed, so the classifier's fc7 output starts as the head's on the levels
    both pool at; the zeroed levels learn from there when fine-tuned."""
    source = tuple(classifier.spp.levels)
    if not all(level in source for level in levels):
        raise ValueError(f"a Fast R-CNN head pooled at levels {levels} cannot set the fc6 of a classifier "
                         f"with SPP levels {source}")
    linears = (classifier.fc6[0], classifier.fc7[0], head.fc6[0], head.fc7[0])
    if not all(isinstance(layer, nn.Linear) for layer in linears):
        raise ValueError("fc6/fc7 are compressed (truncated SVD); only plain fc layers can be copied")
    columns = _level_columns(classifier.trunk.out_channels, source, levels)
    with torch.no_grad():
        weight = torch.zeros_like(classifier.fc6[0].weight)
        weight[:, columns] = head.fc6[0].weight
        classifier.fc6[0].weight.copy_(weight)
        classifier.fc6[0].bias.copy_(head.fc6[0].bias)
        classifier.fc7[0].weight.copy_(head.fc7[0].weight)
        classifier.fc7[0].bias.copy_(head.fc7[0].bias)


def _level_columns(channels: int, pyramid: tuple[int, ...], levels: tuple[int, ...]) -> torch.Tensor:
    """The columns of a ``pyramid`` SPP output (level-major) that hold
    ``levels``, in the order of ``levels``."""
    starts = np.cumsum([0] + [channels * n * n for n in pyramid])
    return torch.cat([torch.arange(starts[pyramid.index(n)], starts[pyramid.index(n) + 1]) for n in levels])
