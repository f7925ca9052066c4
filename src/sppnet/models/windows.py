"""Detection windows: labelling proposals against ground truth, choosing a
scale per window, and pooling windows from cached conv maps (SPEC 2-4).

Shapes: R windows of one image, G ground-truth boxes, S scales, C channels,
B = sum(n*n) pyramid bins. Boxes are xyxy, 0-based continuous pixels of the
original image; they are scaled to each map's input with the map's factor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from sppnet.ops import FeatureGeometry, box_iou, boxes_to_rois, roi_spp

__all__ = ["LabelledWindows", "label_windows", "choose_scales", "pool_windows"]


@dataclass
class LabelledWindows:
    """Windows of one image with their best ground truth.

    boxes (R, 4); labels (R,) class of the max-IoU ground truth, 0 for
    background, -1 for windows to ignore in fine-tuning; overlaps (R,) that
    max IoU; gt_index (R,) index of that ground truth (-1 without any);
    class_overlaps (R, K+1): max IoU with a ground truth of each class (column
    0 unused), for the per-class SVM negatives; is_gt (R,) bool.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    overlaps: torch.Tensor
    gt_index: torch.Tensor
    class_overlaps: torch.Tensor
    is_gt: torch.Tensor


def label_windows(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    num_classes: int,
    fg_threshold: float = 0.5,
    bg_range: tuple[float, float] = (0.1, 0.5),
    gt_difficult: torch.Tensor | None = None,
) -> LabelledWindows:
    """Ground truth first, then proposals: label = class of the max-IoU ground
    truth when IoU >= fg_threshold, background when IoU is in bg_range,
    ignored (-1) otherwise. Difficult ground truths are kept as windows but
    labelled -1 (neither positive nor negative)."""
    gt_boxes = gt_boxes.float().reshape(-1, 4)
    boxes = torch.cat([gt_boxes, proposals.float().reshape(-1, 4)])
    is_gt = torch.zeros(len(boxes), dtype=torch.bool)
    is_gt[: len(gt_boxes)] = True
    class_overlaps = torch.zeros(len(boxes), num_classes)
    if len(gt_boxes) == 0:
        overlaps = torch.zeros(len(boxes))
        gt_index = torch.full((len(boxes),), -1, dtype=torch.long)
        labels = torch.zeros(len(boxes), dtype=torch.long)
        labels[overlaps < bg_range[0]] = -1
        return LabelledWindows(boxes, labels, overlaps, gt_index, class_overlaps, is_gt)
    iou = box_iou(boxes, gt_boxes)  # (R, G)
    overlaps, gt_index = iou.max(1)
    for label in gt_labels.unique().tolist():
        class_overlaps[:, label] = iou[:, gt_labels == label].max(1).values
    labels = torch.full((len(boxes),), -1, dtype=torch.long)
    foreground = overlaps >= fg_threshold
    labels[foreground] = gt_labels[gt_index[foreground]]
    labels[(overlaps >= bg_range[0]) & (overlaps < bg_range[1])] = 0
    if gt_difficult is not None and bool(gt_difficult.any()):
        labels[foreground & gt_difficult[gt_index]] = -1
    return LabelledWindows(boxes, labels, overlaps, gt_index, class_overlaps, is_gt)


def choose_scales(boxes: torch.Tensor, factors: Sequence[float], target: float = 224.0) -> torch.Tensor:
    """Per window, the index of the scale at which its area is closest to
    ``target`` x ``target`` (SPEC section 3)."""
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=1)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=1)
    areas = (widths * heights)[:, None] * torch.tensor(factors, dtype=torch.float32)[None, :] ** 2
    return (areas - target * target).abs().argmin(1)


def pool_windows(
    maps: Mapping[int, "CachedMap"],  # noqa: F821  (sppnet.engine.feature_cache.CachedMap)
    boxes: torch.Tensor,
    geometry: FeatureGeometry,
    levels: Sequence[int],
    rule: str = "sppnet",
    target: float = 224.0,
    flipped: bool = False,
    image_width: float | None = None,
) -> torch.Tensor:
    """Pool each window from the map of its scale: ``Tensor[R, C * B]`` float32.

    ``maps``: scale -> cached map of this image (of the mirrored image when
    ``flipped``; the boxes are then mirrored with ``image_width``).
    """
    scales = sorted(maps)
    factors = [maps[s].factor for s in scales]
    if flipped:
        if image_width is None:
            raise ValueError("pooling mirrored windows needs the image width")
        boxes = torch.stack([image_width - boxes[:, 2], boxes[:, 1], image_width - boxes[:, 0], boxes[:, 3]], 1)
    choice = choose_scales(boxes, factors, target) if len(scales) > 1 else torch.zeros(len(boxes), dtype=torch.long)
    channels = maps[scales[0]].features.shape[0]
    out = torch.empty(len(boxes), channels * sum(n * n for n in levels))
    for index, scale in enumerate(scales):
        chosen = (choice == index).nonzero().flatten()
        if len(chosen) == 0:
            continue
        features = maps[scale].features.float()[None]
        rois = boxes_to_rois([boxes[chosen] * maps[scale].factor], geometry, rule, feature_size=features.shape[-2:])
        out[chosen] = roi_spp(features, rois, levels)
    return out
