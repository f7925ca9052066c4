"""Testing an SPP classifier: centre, 10-view, full-image and multi-view.

Shapes: V views, K classes; images are normalised ``Tensor[3, H, W]``.

- ``center``: shorter side resized to ``resize``, the centre crop x crop view.
- ``10``: the four corners and the centre at the same size, and their mirrors.
- ``full``: the whole image at shorter side ``resize``, aspect ratio kept.
- ``multi``: SPP-net's multi-view testing on feature maps: at each of six
  scales (224, 256, 300, 360, 448, 560 for crop 224, scaled with the crop) the
  conv layers run once on the image and once on its mirror; the 9 windows
  (3 at the smallest scale) of ``multi_view_boxes`` are mapped to cells with
  ``boxes_to_cells`` (the "sppnet" rule) and pooled from those maps with
  ``roi_spp``: 18 views per scale (6 at the smallest), 96 in all.

The softmax outputs of all views are averaged.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.nn import functional as F

from sppnet.data.folder import read_image_folder
from sppnet.data.images import ImageError, load_image
from sppnet.data.transforms import center_box, crop, multi_view_boxes, resize_min_side, ten_view_boxes, to_tensor
from sppnet.engine.classification import load_classifier
from sppnet.models.classifier import SPPClassifier
from sppnet.ops import boxes_to_rois, roi_spp

__all__ = ["VIEW_MODES", "MULTI_VIEW_SCALES", "multi_view_scales", "predict_views", "evaluate_classifier", "load_classifier"]

VIEW_MODES = ("center", "10", "full", "multi")
MULTI_VIEW_SCALES = (224, 256, 300, 360, 448, 560)


def multi_view_scales(crop_size: int) -> tuple[int, ...]:
    """The paper's six scales for a 224 view, scaled to ``crop_size``."""
    return tuple(round(s * crop_size / 224) for s in MULTI_VIEW_SCALES)


def _views_on_feature_maps(model: SPPClassifier, image: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Logits of the multi-view windows, pooled from one conv map per scale and mirror."""
    logits = []
    for scale in multi_view_scales(crop_size):
        resized = resize_min_side(image, scale)
        boxes = multi_view_boxes(resized.shape[1], resized.shape[2], crop_size)
        # The window set is mirror-symmetric, so the same boxes on the mirrored
        # image are the mirrored views.
        maps = model.trunk(torch.stack([resized, resized.flip(-1)]))
        rois = boxes_to_rois([boxes, boxes], model.trunk.geometry, "sppnet", feature_size=maps.shape[-2:])
        logits.append(model.head(roi_spp(maps, rois, model.spp.levels)))
    return torch.cat(logits)


@torch.no_grad()
def predict_views(model: SPPClassifier, image: torch.Tensor, mode: str, resize: int, crop_size: int) -> torch.Tensor:
    """Average softmax ``Tensor[K]`` of ``image`` under view mode ``mode``."""
    if mode not in VIEW_MODES:
        raise ValueError(f"unknown view mode {mode!r}; choose one of {VIEW_MODES}")
    if mode in ("full", "multi") and not model.uses_spp:
        raise ValueError(f"view mode {mode!r} needs an SPP model; the no-SPP baseline takes only fixed-size crops")
    model.eval()
    if mode == "multi":
        return F.softmax(_views_on_feature_maps(model, image, crop_size), dim=1).mean(0)
    resized = resize_min_side(image, resize)
    height, width = resized.shape[1:]
    if mode == "full":
        batch = resized[None]
    elif mode == "center":
        batch = crop(resized, center_box(height, width, crop_size)[0])[None]
    else:
        views = torch.stack([crop(resized, box) for box in ten_view_boxes(height, width, crop_size)])
        batch = torch.cat([views, views.flip(-1)])
    return F.softmax(model(batch), dim=1).mean(0)


def evaluate_classifier(run_dir: str | Path, data: str | Path, split: str, views: str, log=print) -> dict:
    """Top-1 and top-5 error of a run on ``data/split`` with view mode ``views``."""
    model, config, classes = load_classifier(run_dir)
    dataset = read_image_folder(data, split, classes)
    for item in dataset.skipped:
        log(f"skipped: {item}")
    top1 = top5 = total = 0
    started = time.perf_counter()
    for path, label in dataset.samples:
        try:
            image = to_tensor(load_image(path))
        except ImageError as error:
            log(f"skipped: {error}")
            continue
        probs = predict_views(model, image, views, config.train.resize, config.train.crop)
        ranked = probs.argsort(descending=True)
        top1 += int(ranked[0] == label)
        top5 += int(label in ranked[:5].tolist())
        total += 1
    if total == 0:
        raise ValueError(f"no readable images in {Path(data) / split}")
    return {
        "views": views,
        "split": split,
        "images": total,
        "top1_error": 1 - top1 / total,
        "top5_error": 1 - top5 / total,
        "seconds_per_image": (time.perf_counter() - started) / total,
    }
