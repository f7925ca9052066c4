"""Box utilities: validation, clipping and the box-regression coder.

Shapes and names::

    N      boxes (proposals, RoIs, ground truths), one row each
    K      classes with their own deltas (per-class regression)
    boxes  Tensor[N, 4]      float, (x1, y1, x2, y2)
    deltas Tensor[N, 4]      (dx, dy, dw, dh), or Tensor[N, 4 * K] per class

Box convention (DESIGN "Conventions"): xyxy, 0-based continuous pixel
coordinates, width = x2 - x1 and height = y2 - y1 (no +1 anywhere). An image of
height H and width W spans [0, W] x [0, H].

Everything torchvision already does is passed on to ``torchvision.ops``
(``box_iou``, ``box_area``, ``nms``, ``batched_nms``, ``clip_boxes_to_image``,
``remove_small_boxes``), which uses the same convention; torchvision is
imported on the first call, since its import takes ~2 s (most of it
``torch._dynamo``), a third of a ``sppnet`` command's start, and classifying
or generating data never needs it. This module adds input
checking, a (height, width) clipping wrapper and :class:`BoxCoder`, the
R-CNN / SPP-net / Fast R-CNN regression parameterisation (SPEC sections 4, 6)::

    cx = x1 + w / 2,  cy = y1 + h / 2,  w = x2 - x1,  h = y2 - y1
    dx = (gx - px) / pw    dy = (gy - py) / ph
    dw = log(gw / pw)      dh = log(gh / ph)
    delta = (d - means) / stds      (Fast R-CNN: stds = (0.1, 0.1, 0.2, 0.2))
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sppnet.ops.tracing import is_exporting

__all__ = [
    "BoxCoder",
    "batched_nms",
    "box_area",
    "box_iou",
    "class_nms",
    "check_boxes",
    "clip_boxes",
    "clip_boxes_to_image",
    "fuse_detections",
    "mirror_boxes",
    "nms",
    "remove_small_boxes",
    "vote_boxes",
]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``torchvision.ops.box_iou``: IoU ``(N, M)`` of every pair of boxes."""
    from torchvision.ops import box_iou as torchvision_box_iou

    return torchvision_box_iou(boxes1, boxes2)


def box_area(boxes: Tensor) -> Tensor:
    """``torchvision.ops.box_area``: ``(N,)`` areas."""
    from torchvision.ops import box_area as torchvision_box_area

    return torchvision_box_area(boxes)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.nms``: indices of the kept boxes, by decreasing score."""
    from torchvision.ops import nms as torchvision_nms

    return torchvision_nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.batched_nms``: NMS within each ``idxs`` category."""
    from torchvision.ops import batched_nms as torchvision_batched_nms

    return torchvision_batched_nms(boxes, scores, idxs, iou_threshold)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """``torchvision.ops.clip_boxes_to_image``: boxes clipped to ``size`` = (height, width)."""
    from torchvision.ops import clip_boxes_to_image as torchvision_clip

    return torchvision_clip(boxes, size)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """``torchvision.ops.remove_small_boxes``: indices of the boxes with both sides >= ``min_size``."""
    from torchvision.ops import remove_small_boxes as torchvision_remove_small_boxes

    return torchvision_remove_small_boxes(boxes, min_size)


def mirror_boxes(boxes: Tensor, width: float) -> Tensor:
    """Boxes ``(R, 4)`` (xyxy, continuous pixels) of an image ``width`` wide
    -> the same boxes in its horizontally mirrored image."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def check_boxes(boxes: Tensor, name: str = "boxes") -> Tensor:
    """Check that ``boxes`` is a valid ``Tensor[N, 4]`` of xyxy float boxes.

    Args:
        boxes: ``Tensor[N, 4]``, floating point, (x1, y1, x2, y2) with
            ``x1 <= x2`` and ``y1 <= y2``; N may be 0.
        name: what to call the argument in error messages.

    Returns:
        ``boxes`` itself, unchanged.

    Raises:
        TypeError: ``boxes`` is not a tensor or not floating point.
        ValueError: wrong shape, a non-finite value, or x2 < x1 / y2 < y1; the
            message names ``name`` and the first offending row.
    """
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must have a floating point dtype, got {boxes.dtype}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if boxes.numel() == 0:
        return boxes
    bad = ~torch.isfinite(boxes).all(dim=1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name} row {row} has a NaN or infinite coordinate: {boxes[row].tolist()}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name} row {row} has x2 < x1 or y2 < y1 (expected xyxy boxes): {boxes[row].tolist()}"
        )
    return boxes


def _check_positive_size(boxes: Tensor, name: str) -> None:
    if boxes.numel() == 0:
        return
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name} row {row} has zero width or height (x2 - x1 and y2 - y1 must be > 0): "
            f"{boxes[row].tolist()}"
        )


def clip_boxes(boxes: Tensor, image_size: Sequence[float]) -> Tensor:
    """Clip boxes to an image of ``image_size = (height, width)``.

    x coordinates are clamped to [0, width] and y to [0, height] (continuous
    coordinates: the image spans [0, W] x [0, H]). Thin wrapper over
    ``torchvision.ops.clip_boxes_to_image``.

    Args:
        boxes: ``Tensor[..., 4]`` xyxy (so ``Tensor[N, 4]`` boxes or
            ``Tensor[N, 4 * K]`` per-class boxes).
        image_size: (height, width), positive; while tracing, tensors such as
            ``image.shape[-2:]`` (the graph then clips to each input's size).

    Returns:
        Clipped boxes, same shape, dtype and device as ``boxes``.
    """
    if is_exporting():
        return _traced_clip(boxes, image_size)
    if not isinstance(boxes, Tensor):
        raise TypeError(f"boxes must be a torch.Tensor, got {type(boxes).__name__}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must have a floating point dtype, got {boxes.dtype}")
    if boxes.dim() == 0 or boxes.shape[-1] % 4 != 0:
        raise ValueError(f"boxes must have a last dimension divisible by 4, got shape {tuple(boxes.shape)}")
    try:
        height, width = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if not (height > 0 and width > 0 and math.isfinite(height) and math.isfinite(width)):
        raise ValueError(f"image_size must be a positive (height, width), got {image_size!r}")
    # A bound beyond the dtype's range (float16 above 65504) clips nothing: say so
    # with inf, which every dtype holds, rather than a number it cannot.
    largest = torch.finfo(boxes.dtype).max
    height, width = (v if v <= largest else math.inf for v in (height, width))
    return clip_boxes_to_image(boxes, (height, width))


def _traced_clip(boxes: Tensor, image_size: Sequence) -> Tensor:
    # float(height) would freeze the example's size into the graph: keep it a tensor.
    height, width = (torch.as_tensor(v, device=boxes.device).to(boxes.dtype) for v in image_size)
    x = torch.minimum(boxes[..., 0::2].clamp(min=0), width)
    y = torch.minimum(boxes[..., 1::2].clamp(min=0), height)
    return torch.stack([x, y], dim=-1).reshape(boxes.shape)


def _check_four(values: Sequence[float], name: str) -> tuple[float, float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except TypeError:
        raise ValueError(f"BoxCoder.{name} must be 4 numbers, got {values!r}") from None
    if len(out) != 4 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"BoxCoder.{name} must be 4 finite numbers, got {values!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class BoxCoder:
    """Encode boxes as regression deltas relative to proposals, and back.

    Centres and sizes use width = x2 - x1 (no +1)::

        dx = (gx - px) / pw,  dy = (gy - py) / ph,  dw = log(gw / pw),  dh = log(gh / ph)
        delta = (d - means) / stds

    Args:
        means: per-coordinate mean subtracted from (dx, dy, dw, dh).
        stds: per-coordinate std the deltas are divided by; Fast R-CNN uses
            (0.1, 0.1, 0.2, 0.2) (SPEC section 6). Must be positive.
        clip_log_scale: ``dw`` and ``dh`` are clamped to at most this before
            ``exp`` in :meth:`decode` (default log(1000 / 16), as torchvision).

    Equivalent to ``torchvision.models.detection._utils.BoxCoder`` with
    ``weights = 1 / stds`` when ``means`` are zero.
    """

    means: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    stds: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    clip_log_scale: float = math.log(1000.0 / 16)

    def __post_init__(self) -> None:
        means = _check_four(self.means, "means")
        stds = _check_four(self.stds, "stds")
        if not all(s > 0 for s in stds):
            raise ValueError(f"BoxCoder.stds must all be > 0, got {self.stds!r}")
        clip = float(self.clip_log_scale)
        if math.isnan(clip):
            raise ValueError("BoxCoder.clip_log_scale must not be NaN")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "clip_log_scale", clip)

    def encode(self, proposals: Tensor, targets: Tensor) -> Tensor:
        """Regression targets that move each proposal onto its target box.

        Args:
            proposals: ``Tensor[N, 4]`` xyxy float, width and height > 0.
            targets: ``Tensor[N, 4]`` xyxy float (matched ground truths),
                width and height > 0.

        Returns:
            ``Tensor[N, 4]`` normalised deltas (dx, dy, dw, dh), in the
            promoted dtype of the inputs, on their device; (0, 4) when N = 0.

        Raises:
            TypeError / ValueError: invalid boxes (see :func:`check_boxes`),
                mismatched N, or a box with zero width or height (row named).
        """
        check_boxes(proposals, "proposals")
        check_boxes(targets, "targets")
        if proposals.shape[0] != targets.shape[0]:
            raise ValueError(
                f"proposals and targets must have the same number of rows, "
                f"got {proposals.shape[0]} and {targets.shape[0]}"
            )
        _check_positive_size(proposals, "proposals")
        _check_positive_size(targets, "targets")
        dtype = torch.promote_types(proposals.dtype, targets.dtype)
        proposals = proposals.to(dtype)
        targets = targets.to(dtype)

        pw = proposals[:, 2] - proposals[:, 0]
        ph = proposals[:, 3] - proposals[:, 1]
        px = proposals[:, 0] + 0.5 * pw
        py = proposals[:, 1] + 0.5 * ph
        gw = targets[:, 2] - targets[:, 0]
        gh = targets[:, 3] - targets[:, 1]
        gx = targets[:, 0] + 0.5 * gw
        gy = targets[:, 1] + 0.5 * gh

        deltas = torch.stack(
            ((gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)), dim=1
        )
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply (normalised) deltas to boxes: the inverse of :meth:`encode`.

        Args:
            deltas: ``Tensor[N, 4]`` or per-class ``Tensor[N, 4 * K]``
                (class k in columns 4k .. 4k + 3), floating point.
            boxes: ``Tensor[N, 4]`` xyxy reference boxes (proposals); cast to
                the dtype of ``deltas``.

        Returns:
            ``Tensor[N, 4]`` or ``Tensor[N, 4 * K]`` xyxy boxes, same shape,
            dtype and device as ``deltas``. Not clipped to the image (see
            :func:`clip_boxes`); dw and dh are clamped at ``clip_log_scale``.
        """
        if not isinstance(deltas, Tensor):
            raise TypeError(f"deltas must be a torch.Tensor, got {type(deltas).__name__}")
        if not deltas.is_floating_point():
            raise TypeError(f"deltas must have a floating point dtype, got {deltas.dtype}")
        if deltas.dim() != 2 or deltas.shape[1] == 0 or deltas.shape[1] % 4 != 0:
            raise ValueError(f"deltas must have shape (N, 4 * K) with K >= 1, got {tuple(deltas.shape)}")
        if not isinstance(boxes, Tensor):
            raise TypeError(f"boxes must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}")
        if boxes.is_complex():
            raise TypeError(f"boxes must hold real numbers, got dtype {boxes.dtype}")
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4) (x1, y1, x2, y2), got {tuple(boxes.shape)}")
        if boxes.shape[0] != deltas.shape[0]:
            raise ValueError(
                f"deltas and boxes must have the same number of rows, "
                f"got {deltas.shape[0]} and {boxes.shape[0]}"
            )
        # float16 / bfloat16 are decoded in float32 (their range cannot hold
        # exp(clip_log_scale) * width, nor every mean, std or clip value).
        out_dtype = deltas.dtype
        if out_dtype in (torch.float16, torch.bfloat16):
            deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        n = deltas.shape[0]
        d = deltas.reshape(n, deltas.shape[1] // 4, 4)
        d = d * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)

        widths = (boxes[:, 2] - boxes[:, 0])[:, None]
        heights = (boxes[:, 3] - boxes[:, 1])[:, None]
        ctr_x = boxes[:, 0][:, None] + 0.5 * widths
        ctr_y = boxes[:, 1][:, None] + 0.5 * heights

        # a clip beyond the dtype's range is no clip (and torch refuses such a bound)
        clip = self.clip_log_scale
        if abs(clip) > torch.finfo(d.dtype).max:
            clip = math.copysign(math.inf, clip)
        dw = d[..., 2].clamp(max=clip)
        dh = d[..., 3].clamp(max=clip)
        pred_x = d[..., 0] * widths + ctr_x
        pred_y = d[..., 1] * heights + ctr_y
        half_w = 0.5 * torch.exp(dw) * widths
        half_h = 0.5 * torch.exp(dh) * heights

        out = torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), dim=2)
        return out.reshape(deltas.shape).to(out_dtype)


def _window_shapes(caller: str, boxes_name: str, boxes: Tensor, scores_name: str, scores: Tensor) -> tuple[int, int]:
    """(R, K) of window ``scores`` (R, K), checked, with their ``boxes``
    (R, 4) shared by all classes or (R, K, 4) per class."""
    if scores.dim() != 2:
        raise ValueError(f"{caller}: {scores_name} must have shape (R, K), got {tuple(scores.shape)}")
    num_windows, num_classes = scores.shape
    if tuple(boxes.shape) not in ((num_windows, 4), (num_windows, num_classes, 4)):
        raise ValueError(f"{caller}: {boxes_name} must have shape ({num_windows}, 4) or "
                         f"({num_windows}, {num_classes}, 4) for {scores_name} of shape {tuple(scores.shape)}, "
                         f"got {tuple(boxes.shape)}")
    return num_windows, num_classes


def class_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, top_k: int,
              soft_sigma: float | None = None):
    """Per-class NMS over R windows and K object classes.

    ``soft_sigma``: Gaussian soft-NMS (Bodla et al. 2017) instead of removing
    the windows that overlap a kept one by more than ``iou_threshold``
    (which it does not read): each kept window multiplies the scores of the
    class's remaining windows by exp(-IoU^2 / soft_sigma), and the returned
    scores are the decayed ones.

    ``boxes`` (R, 4) shared by all classes or (R, K, 4) per class; ``scores``
    (R, K), column k for class k + 1. Keeps at most ``top_k`` per class.
    Returns ``(window (D,), labels (D,) in 1..K, boxes (D, 4), scores (D,))``,
    each class's detections by decreasing score.

    Raises ``TypeError`` for non-tensors or non-float boxes or scores, and
    ``ValueError`` for shapes that do not fit, a NaN ``iou_threshold`` or a
    ``top_k`` that is not an int >= 0. NaN or infinite boxes and scores are
    not checked: what is kept among them is unspecified.
    """
    for name, value in (("boxes", boxes), ("scores", scores)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"class_nms: {name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"class_nms: {name} must have a floating point dtype, got {value.dtype}")
    num_windows, num_classes = _window_shapes("class_nms", "boxes", boxes, "scores", scores)
    try:
        threshold = float(iou_threshold)
    except (TypeError, ValueError):
        threshold = math.nan
    if math.isnan(threshold):
        raise ValueError(f"class_nms: iou_threshold must be a number, got {iou_threshold!r}")
    try:
        count = operator.index(top_k) if not isinstance(top_k, bool) else -1
    except TypeError:
        count = -1
    if count < 0:
        raise ValueError(f"class_nms: top_k must be an int >= 0, got {top_k!r}")
    top_k = count
    if num_windows == 0 or num_classes == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=scores.device)
        return empty, empty.clone(), boxes.new_zeros((0, 4)), scores.new_zeros((0,))
    if boxes.dim() == 2:
        boxes = boxes[:, None, :].expand(num_windows, num_classes, 4)
    if soft_sigma is not None:
        if not float(soft_sigma) > 0:
            raise ValueError(f"class_nms: soft_sigma must be > 0 or None, got {soft_sigma!r}")
        return _soft_class_nms(boxes, scores, float(soft_sigma), top_k)
    all_boxes = boxes.reshape(-1, 4)
    all_labels = torch.arange(1, num_classes + 1, device=scores.device).repeat(num_windows)
    all_scores = scores.reshape(-1)
    keep = batched_nms(all_boxes.float(), all_scores.float(), all_labels, threshold)
    keep = torch.cat([keep[all_labels[keep] == c][:top_k] for c in range(1, num_classes + 1)])
    return keep // num_classes, all_labels[keep], all_boxes[keep], all_scores[keep]


def _soft_class_nms(boxes: Tensor, scores: Tensor, sigma: float, top_k: int):
    """``class_nms`` with Gaussian soft-NMS; ``boxes`` (R, K, 4)."""
    windows, labels, kept_scores = [], [], []
    for k in range(scores.shape[1]):
        remaining = torch.arange(scores.shape[0], device=scores.device)
        class_boxes, class_scores = boxes[:, k].float(), scores[:, k].float().clone()
        for _ in range(min(top_k, scores.shape[0])):
            best = int(class_scores[remaining].argmax())
            window = remaining[best]
            windows.append(window)
            kept_scores.append(class_scores[window])
            remaining = torch.cat([remaining[:best], remaining[best + 1:]])
            if len(remaining) == 0:
                break
            overlap = box_iou(class_boxes[window][None], class_boxes[remaining])[0]
            class_scores[remaining] *= torch.exp(-overlap * overlap / sigma)
        labels.extend([k + 1] * (len(windows) - len(labels)))
    if not windows:
        empty = torch.zeros(0, dtype=torch.int64, device=scores.device)
        return empty, empty.clone(), boxes.new_zeros((0, 4)), scores.new_zeros((0,))
    window = torch.stack(windows)
    label = torch.tensor(labels, dtype=torch.int64, device=scores.device)
    return window, label, boxes[window, label - 1], torch.stack(kept_scores).to(scores.dtype)


def vote_boxes(kept_boxes: Tensor, kept_labels: Tensor, candidate_boxes: Tensor, candidate_scores: Tensor,
               iou_threshold: float = 0.5) -> Tensor:
    """Box voting (Gidaris & Komodakis 2015, "Object detection via a
    multi-region & semantic segmentation-aware CNN model", section 5): each
    detection NMS kept is moved to the mean of its class's candidate boxes
    (all the scored windows, before NMS, itself among them) that overlap it
    at IoU >= ``iou_threshold``, each weighted by max(0, its score). Windows
    NMS suppressed carry evidence about where the object is: the mean of a
    cluster of well-scored boxes is a better estimate than its single best.

    ``kept_boxes`` (D, 4) with ``kept_labels`` (D,) in 1..K (``class_nms``'s
    output); ``candidate_boxes`` (R, 4) shared by all classes or (R, K, 4)
    per class; ``candidate_scores`` (R, K), column k for class k + 1. A kept
    box with no positive weight around it (SVM margins all <= 0) keeps its
    box. Returns the voted boxes (D, 4); scores are not changed."""
    num_windows, num_classes = _window_shapes("vote_boxes", "candidate_boxes", candidate_boxes,
                                              "candidate_scores", candidate_scores)
    if len(kept_boxes) != len(kept_labels):
        raise ValueError(f"vote_boxes: {len(kept_boxes)} kept boxes but {len(kept_labels)} labels")
    voted = kept_boxes.clone()
    for label in kept_labels.unique().tolist():
        if not 1 <= label <= num_classes:
            raise ValueError(f"vote_boxes: label {label} is not in 1..{num_classes}")
        rows = kept_labels == label
        candidates = candidate_boxes[:, label - 1] if candidate_boxes.dim() == 3 else candidate_boxes
        weights = candidate_scores[:, label - 1].float().clamp(min=0)
        voters = weights > 0
        candidates, weights = candidates[voters].float(), weights[voters]
        kept = kept_boxes[rows].float()
        votes = weights[None] * (box_iou(kept, candidates) >= iou_threshold)  # (d, R')
        total = votes.sum(1, keepdim=True)
        mean = votes @ candidates / total.clamp(min=torch.finfo(total.dtype).tiny)
        voted[rows] = torch.where(total > 0, mean, kept).to(voted.dtype)
    return voted


def fuse_detections(boxes: Sequence[Tensor], scores: Sequence[Tensor], labels: Sequence[Tensor],
                    iou_threshold: float = 0.55) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted box fusion (Solovyev et al. 2019) of M models' detections of
    one image: ``boxes[m]`` (D_m, 4), ``scores[m]`` (D_m,), ``labels[m]``
    (D_m,). Per class, in decreasing score, each detection joins the cluster
    whose fused box it overlaps most, at IoU >= ``iou_threshold``, among those
    holding no detection of its own model yet (each model's own NMS stands),
    or starts one. A cluster's box is its members' mean (WBF weights it by
    score), its score their summed score over M: a model that misses the
    object adds 0, so found by one model of two, a detection keeps half its
    score. That reads scores as probabilities; negative ones (SVM margins,
    where 0 is the decision boundary, not "not found") raise ``ValueError``.
    Returns ``(boxes (F, 4), labels (F,), scores (F,))``, by decreasing score."""
    models = len(boxes)
    all_boxes = torch.cat([b.float().reshape(-1, 4) for b in boxes])
    all_scores = torch.cat([s.float().reshape(-1) for s in scores])
    if len(all_scores) and float(all_scores.min()) < 0:
        raise ValueError(f"fuse_detections: scores must be >= 0 (probabilities), got {float(all_scores.min()):.4g}: "
                         "a model that misses a detection adds 0 to its score. Score SVM-scored runs with their "
                         "softmax (--scorer softmax) or combine them by NMS (--combine-by nms)")
    all_labels = torch.cat([label.reshape(-1) for label in labels])
    model_of = torch.cat([torch.full((len(s.reshape(-1)),), m, dtype=torch.long) for m, s in enumerate(scores)])
    out_boxes, out_labels, out_scores = [], [], []
    for label in all_labels.unique().tolist():
        chosen = (all_labels == label).nonzero().flatten()
        chosen = chosen[all_scores[chosen].argsort(descending=True, stable=True)]
        summed = torch.zeros(len(chosen), 4)  # per cluster: the sum of its boxes and of its scores, its models
        totals = torch.zeros(len(chosen))
        members = torch.zeros(len(chosen), models, dtype=torch.bool)
        clusters = 0
        for index in chosen.tolist():
            box, score, model = all_boxes[index], all_scores[index], int(model_of[index])
            target = -1
            if clusters:
                fused = summed[:clusters] / members[:clusters].sum(1, keepdim=True)
                overlap = box_iou(box[None], fused)[0]
                overlap[members[:clusters, model]] = -1.0
                best = int(overlap.argmax())
                if float(overlap[best]) >= iou_threshold:
                    target = best
            if target < 0:
                target, clusters = clusters, clusters + 1
            summed[target] += box
            totals[target] += score
            members[target, model] = True
        if clusters:
            out_boxes.append(summed[:clusters] / members[:clusters].sum(1, keepdim=True))
            out_scores.append(totals[:clusters] / models)
            out_labels.append(torch.full((clusters,), label, dtype=all_labels.dtype))
    if not out_boxes:
        return torch.zeros(0, 4), all_labels.new_zeros(0), torch.zeros(0)
    fused_scores = torch.cat(out_scores)
    order = fused_scores.argsort(descending=True, stable=True)
    return torch.cat(out_boxes)[order], torch.cat(out_labels)[order], fused_scores[order]
