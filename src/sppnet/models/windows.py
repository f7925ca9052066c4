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

from sppnet.data.transforms import scale_image
from sppnet.fast_path import as_input, autocast
from sppnet.ops import FeatureGeometry, box_iou, boxes_to_rois, mirror_boxes, roi_spp
from sppnet.timing import StageTimer, stage

__all__ = ["CachedMap", "image_maps", "one_image_rois", "LabelledWindows", "WindowPooler", "label_windows", "choose_scales", "pool_windows", "cached_window_pooler",
           "pooled_fc6"]


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


class WindowPooler:
    """Windows of one image pooled from the map of their scale, any rows at a time.

    ``maps``: one ``Tensor[1, C, h, w]`` per scale; ``scale_of`` ``(R,)``: the
    map each window is pooled from; ``rois`` ``(R, 5)``: its cells in that
    map. ``pool(rows)`` gives ``Tensor[len(rows), C * B]`` in the maps' dtype,
    so a caller can pool a block of windows, use it and let it go
    (``pooled_fc6``) instead of holding every window's pooled vector.
    """

    def __init__(self, maps: Sequence[torch.Tensor], scale_of: torch.Tensor, rois: torch.Tensor,
                 levels: Sequence[int]) -> None:
        self.maps, self.scale_of, self.rois, self.levels = list(maps), scale_of, rois, tuple(levels)
        self.width = maps[0].shape[1] * sum(n * n for n in self.levels)

    def __len__(self) -> int:
        return len(self.rois)

    @classmethod
    def from_boxes(cls, maps: Sequence[torch.Tensor], factors: Sequence[float], boxes: torch.Tensor,
                   geometry: FeatureGeometry, levels: Sequence[int], rule: str, target: float) -> WindowPooler:
        """Boxes ``(R, 4)`` in original pixels; ``maps[s]`` computed from the
        image resized by ``factors[s]``; each window goes to the scale where it
        is closest to ``target`` x ``target`` (``choose_scales``)."""
        choice = (choose_scales(boxes, factors, target) if len(maps) > 1
                  else torch.zeros(len(boxes), dtype=torch.long))
        rois = torch.zeros(len(boxes), 5, dtype=torch.long)
        for index, (features, factor) in enumerate(zip(maps, factors)):
            chosen = (choice == index).nonzero().flatten()
            if len(chosen):
                rois[chosen] = boxes_to_rois([boxes[chosen] * factor], geometry, rule,
                                             feature_size=features.shape[-2:]).long().cpu()
        return cls(maps, choice, rois, levels)

    def pool(self, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """The pooled vectors of ``rows`` (a slice or a tensor of window
        indices), in that order: ``Tensor[len(rows), C * B]``."""
        scale_of, rois = self.scale_of[rows], self.rois[rows]
        out = self.maps[0].new_empty(len(rois), self.width)
        for index, features in enumerate(self.maps):
            chosen = (scale_of == index).nonzero().flatten()
            if len(chosen):
                out[chosen.to(out.device)] = roi_spp(features, rois[chosen].to(features.device), self.levels)
        return out


def pooled_fc6(pooler: WindowPooler, fc6: torch.nn.Module, block: int = 1024,
               timer: StageTimer | None = None) -> torch.Tensor:
    """``fc6(pooler.pool())`` without the whole pooled matrix: windows are
    pooled ``block`` at a time and each block goes through ``fc6`` at once,
    so only ``block`` pooled rows exist at any moment (2000 windows of ZF-5's
    12,800-value vector are 102 MB in float32; a block of 1024 is 52 MB).
    The same values as the unblocked path: each row of a matrix product
    depends only on its own input row. Smaller blocks save more memory but
    cost time on a CPU: every block streams fc6's weights (210 MB at full
    width) from memory again; ``benchmarks/fused_fc6.py`` measured 0.97x the
    unfused time at 1024 and 0.93x at 256 in float32 (RESULTS.md). ``timer`` gets the
    pooling and fc seconds as the stages "pooling" and "fc"."""
    if block < 1:
        raise ValueError(f"block must be >= 1 window, got {block}")
    out = None
    for start in range(0, len(pooler), block):
        rows = slice(start, min(start + block, len(pooler)))
        with stage(timer, "pooling"):
            pooled = pooler.pool(rows)
        with stage(timer, "fc"):
            hidden = fc6(pooled)
        if out is None:
            out = hidden.new_empty(len(pooler), hidden.shape[1])
        out[rows] = hidden
    return out


@dataclass
class CachedMap:
    """One conv map of an image at one scale (what the feature cache stores): ``features`` float16 (C, h, w); ``factor`` maps
    original image pixels to the resized input's."""

    features: torch.Tensor
    scale: int
    factor: float


def one_image_rois(cells: torch.Tensor) -> torch.Tensor:
    """Cells ``(R, 4)`` of one image -> ``roi_spp``'s ``(R, 5)`` RoIs (batch
    index 0), built from the cells so that a traced graph keeps R dynamic."""
    return torch.cat([torch.zeros_like(cells[:, :1]), cells], dim=1)


def image_maps(trunk: torch.nn.Module, image: torch.Tensor, scales: Sequence[int], max_side: int | None,
               precision: str = "fp32") -> dict[int, CachedMap]:
    """The one image -> conv5 maps function of SPP-net (SPEC section 3):
    ``image`` normalised ``[3, H, W]`` resized to each scale (``scale_image``)
    and run through ``trunk`` (in ``precision``; the caller puts the trunk in
    eval mode and its memory format, ``fast_path.prepare``). The maps are kept
    in float16, as the feature cache stores them, so that detecting on maps
    computed now or read from the cache gives the same numbers."""
    maps = {}
    for scale in scales:
        scaled, factor = scale_image(image, scale, max_side)
        with autocast(precision):
            features = trunk(as_input(scaled[None], precision))[0]
        maps[scale] = CachedMap(features.to(torch.float16).contiguous(), scale, factor)
    return maps


def pool_windows(maps: Mapping[int, CachedMap], boxes: torch.Tensor, geometry: FeatureGeometry,
                 levels: Sequence[int], **options) -> torch.Tensor:
    """Pool each window from the map of its scale: ``Tensor[R, C * B]``
    float32, all at once. ``options``: ``cached_window_pooler``'s (``rule``,
    ``target``, ``flipped``, ``image_width``)."""
    return cached_window_pooler(maps, boxes, geometry, levels, **options).pool()


def cached_window_pooler(
    maps: Mapping[int, CachedMap],
    boxes: torch.Tensor,
    geometry: FeatureGeometry,
    levels: Sequence[int],
    rule: str = "sppnet",
    target: float = 224.0,
    flipped: bool = False,
    image_width: float | None = None,
) -> WindowPooler:
    """A ``WindowPooler`` over an image's cached maps (scale -> map; those of
    its mirror image when ``flipped``, the boxes then mirrored with
    ``image_width``), pooling in float32."""
    scales = sorted(maps)
    if flipped:
        if image_width is None:
            raise ValueError("pooling mirrored windows needs the image width")
        boxes = mirror_boxes(boxes, image_width)
    return WindowPooler.from_boxes([maps[s].features.float()[None] for s in scales], [maps[s].factor for s in scales],
                                   boxes, geometry, levels, rule, target)
