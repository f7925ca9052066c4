"""Drawings: detections or ground truth on an image, saved as PNG.

Boxes are the package's xyxy 0-based continuous pixels of the image drawn on;
torchvision's ``draw_bounding_boxes`` does the drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sppnet.data.images import load_image

__all__ = ["draw_detections", "save_detection_drawing"]

# A fixed palette, so one class keeps its colour across images.
_PALETTE = [
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe", "#008080",
    "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1", "#000075", "#808080", "#ffe119",
]


def draw_detections(
    image: np.ndarray | torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    scores: torch.Tensor | None = None,
    score_threshold: float = float("-inf"),
    width: int = 2,
    top: int | None = None,
) -> torch.Tensor:
    """Draw boxes with "class score" captions.

    image: ``ndarray[H, W, 3]`` or ``Tensor[3, H, W]`` uint8; boxes ``Tensor[D, 4]``;
    labels ``Tensor[D]`` indices into ``classes``; scores ``Tensor[D]`` or None
    (ground truth); only boxes scoring at least ``score_threshold`` and,
    with ``top``, only the ``top`` highest-scoring ones are drawn. Returns
    ``Tensor[3, H, W]`` uint8.
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be uint8 (3, H, W) or (H, W, 3), got {tuple(image.shape)} {image.dtype}")
    keep = torch.ones(len(boxes), dtype=torch.bool) if scores is None else scores >= score_threshold
    if scores is not None and top is not None and int(keep.sum()) > top:
        keep &= scores >= scores[keep].topk(top).values[-1]
    boxes, labels = boxes[keep].float(), labels[keep]
    captions = [classes[int(label)] for label in labels]
    if scores is not None:
        captions = [f"{name} {score:.2f}" for name, score in zip(captions, scores[keep].tolist())]
    colours = [_PALETTE[int(label) % len(_PALETTE)] for label in labels]
    if len(boxes) == 0:
        return image.clone()
    # Captions sit on a patch of the box's colour, in black or white, whichever
    # contrasts more: the box colour on a busy image was unreadable.
    from torchvision.utils import draw_bounding_boxes  # on first use: see sppnet.ops.boxes

    return draw_bounding_boxes(image, boxes, captions, colors=colours, width=width, fill_labels=True,
                               label_colors=[_text_colour(colour) for colour in colours])


def _text_colour(background: str) -> str:
    """Black or white, whichever contrasts more with ``background`` ("#rrggbb"),
    by the WCAG relative luminance (sRGB channels linearised)."""
    channels = [int(background[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # Contrast ratio with white (1.05 / (L + 0.05)) beats black's ((L + 0.05) / 0.05) below L ~ 0.179.
    return "#ffffff" if luminance < 0.179 else "#000000"


def save_detection_drawing(image_path: str | Path, out_path: str | Path, **kwargs) -> Path:
    """Load ``image_path``, draw (``draw_detections`` keyword arguments) and
    write a PNG to ``out_path``."""
    drawing = draw_detections(load_image(image_path), **kwargs)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(drawing.permute(1, 2, 0).numpy()).save(out_path)
    return out_path
