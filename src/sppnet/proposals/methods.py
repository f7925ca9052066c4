"""The proposal methods: one image in, boxes out (see ``sppnet.proposals``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sppnet.proposals.config import ProposalConfig
from sppnet.proposals.selective_search import selective_search

__all__ = ["propose"]


def propose(image: np.ndarray, config: ProposalConfig) -> Tensor:
    """Region proposals for one image.

    Args:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB (as :func:`load_image` returns).
        config: the method and its settings.

    Returns:
        ``Tensor[P, 4]`` float32 xyxy boxes in the image's pixels, clipped to
        [0, W] x [0, H], without duplicates, width and height >= ``min_size``
        (and > 0), at most ``max_proposals``, in the method's ranking order.
    """
    return torch.from_numpy(_propose_array(image, config))


def _propose_array(image: np.ndarray, config: ProposalConfig) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be an np.ndarray[H, W, 3] uint8 RGB, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an np.ndarray[H, W, 3] uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"image has no pixels: shape {image.shape}")

    if config.method == "grid":
        boxes = _grid_windows(width, height, config.grid_scales, config.grid_aspect_ratios, config.grid_stride)
        return _finish(boxes, width, height, config, spread=True)

    search, sx, sy = _resized(image, config.resize_to)
    if config.method == "edge-boxes":
        xywh = _edge_boxes(search, config)
    else:
        xywh = _selective_search(search, quality=config.method == "selective-search-quality")
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    boxes *= np.array([sx, sy, sx, sy])
    return _finish(boxes, width, height, config, spread=False)


def _finish(boxes: np.ndarray, width: int, height: int, config: ProposalConfig, spread: bool) -> np.ndarray:
    """Clip, drop small boxes, deduplicate (first occurrence wins), cap the count."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(axis=1)]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    boxes = boxes.astype(np.float32)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    boxes = boxes[(w > 0) & (h > 0) & (w >= config.min_size) & (h >= config.min_size)]
    if len(boxes):
        _, first = np.unique(boxes, axis=0, return_index=True)
        boxes = boxes[np.sort(first)]
    if len(boxes) > config.max_proposals:
        if spread:  # an unranked grid: keep an evenly spread subset, not the first scales only
            keep = np.linspace(0, len(boxes) - 1, config.max_proposals).round().astype(np.int64)
            boxes = boxes[keep]
        else:
            boxes = boxes[: config.max_proposals]
    return np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)


def _grid_windows(
    width: int, height: int, scales: Sequence[float], aspect_ratios: Sequence[float], stride: float
) -> np.ndarray:
    """Dense windows, ``np.ndarray[N, 4]`` float64 xyxy, ordered by scale, then
    aspect ratio, then row, then column.

    A window of scale s and aspect ratio r (height / width) has side
    ``a = s * min(W, H)``, width ``min(a / sqrt(r), W)`` and height
    ``min(a * sqrt(r), H)``. Along x there are ``ceil((W - w) / (stride * w)) + 1``
    positions spread evenly over [0, W - w] (one when w = W), likewise along y.
    """
    short = float(min(width, height))
    out = []
    for scale in scales:
        side = scale * short
        for ratio in aspect_ratios:
            w = min(side / math.sqrt(ratio), float(width))
            h = min(side * math.sqrt(ratio), float(height))
            xs = _positions(float(width), w, stride)
            ys = _positions(float(height), h, stride)
            x1, y1 = np.meshgrid(xs, ys)  # rows of y, columns of x
            x1, y1 = x1.ravel(), y1.ravel()
            out.append(np.stack([x1, y1, x1 + w, y1 + h], axis=1))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 4))


def _positions(extent: float, size: float, stride: float) -> np.ndarray:
    room = extent - size
    if room <= 1e-9:
        return np.zeros(1)
    count = math.ceil(room / (stride * size) - 1e-9) + 1
    return np.linspace(0.0, room, count)


def _resized(image: np.ndarray, resize_to: int | None) -> tuple[np.ndarray, float, float]:
    """The image to search and the factors mapping its x and y back to the original."""
    height, width = image.shape[:2]
    if resize_to is None or min(height, width) == resize_to:
        return image, 1.0, 1.0
    cv2 = _cv2()
    scale = resize_to / min(height, width)
    new_w = max(1, int(round(width * scale)))
    new_h = max(1, int(round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    search = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return search, width / new_w, height / new_h


def _cv2():
    try:
        import cv2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "region proposals need OpenCV with the contrib modules: pip install opencv-contrib-python-headless"
        ) from error
    if not hasattr(cv2, "ximgproc"):  # pragma: no cover - depends on the environment
        raise ImportError(
            "this OpenCV build has no cv2.ximgproc (contrib modules); install opencv-contrib-python-headless "
            "instead of opencv-python"
        )
    return cv2


def _selective_search(rgb: np.ndarray, quality: bool) -> np.ndarray:
    _cv2()  # a clear error when OpenCV's contrib modules are missing
    return selective_search(np.ascontiguousarray(rgb[:, :, ::-1]), quality=quality)


# Structured edge detectors already loaded in this process, by model path.
_EDGE_DETECTORS: dict[str, object] = {}


def _edge_boxes(rgb: np.ndarray, config: ProposalConfig) -> np.ndarray:
    cv2 = _cv2()
    assert config.edge_model is not None  # checked in ProposalConfig.__post_init__
    model = str(config.edge_model)
    detector = _EDGE_DETECTORS.get(model)
    if detector is None:
        try:
            detector = cv2.ximgproc.createStructuredEdgeDetection(model)
        except cv2.error as error:
            raise ValueError(f"{model}: cannot load the structured edge model ({error})") from None
        _EDGE_DETECTORS[model] = detector
    edges = detector.detectEdges(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0)
    orientation = detector.computeOrientation(edges)
    edges = detector.edgesNms(edges, orientation)
    finder = cv2.ximgproc.createEdgeBoxes(
        alpha=float(config.edge_alpha),
        beta=float(config.edge_beta),
        # ask for some more than needed: small and duplicate boxes are dropped afterwards
        maxBoxes=int(config.max_proposals) * 2,
    )
    result = finder.getBoundingBoxes(edges, orientation)
    # OpenCV >= 4.5.x returns (boxes, scores); older versions return boxes only.
    if isinstance(result, tuple):
        result = result[0] if len(result) else ()
    return np.asarray(result, dtype=np.float64).reshape(-1, 4)
