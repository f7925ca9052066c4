"""Testing an SPP classifier: centre, 10-view, full-image and multi-view.

Shapes: V views, K classes; images are normalised ``Tensor[3, H, W]``.

- ``center``: shorter side resized to ``resize``, the centre crop x crop view.
- ``10``: the four corners and the centre at the same size, and their mirrors.
- ``full``: the whole image, aspect ratio kept, at shorter side ``resize``
  for a net trained on the paper's crops, and at the side where objects have
  their training crops' mean scale for one trained with scale augmentation
  (``full_image_side``).
- ``multi``: SPP-net's multi-view testing on feature maps: at each of six
  scales (224, 256, 300, 360, 448, 560 for crop 224, scaled with the crop) the
  conv layers run once on the image and once on its mirror; the 9 windows
  (3 at the smallest scale) of ``multi_view_boxes`` are mapped to cells with
  ``boxes_to_cells`` (the "sppnet" rule) and pooled from those maps with
  ``roi_spp``: 18 views per scale (6 at the smallest), 96 in all.

The softmax outputs of all views are averaged.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from sppnet.data.folder import read_image_folder
from sppnet.data.images import ImageError, load_image
from sppnet.data.transforms import center_box, crop, multi_view_boxes, resize_min_side, ten_view_boxes, to_tensor
from sppnet.engine.classification import ClassifyTrainConfig, load_classifier
from sppnet.models.classifier import SPPClassifier
from sppnet.ops import boxes_to_rois, roi_spp

__all__ = ["VIEW_MODES", "MULTI_VIEW_SCALES", "multi_view_scales", "full_image_side", "predict_views",
           "evaluate_classifier", "load_classifier"]

VIEW_MODES = ("center", "10", "full", "multi")
MULTI_VIEW_SCALES = (224, 256, 300, 360, 448, 560)


def multi_view_scales(crop_size: int) -> tuple[int, ...]:
    """The paper's six scales for a 224 view, scaled to ``crop_size``."""
    return tuple(round(s * crop_size / 224) for s in MULTI_VIEW_SCALES)


def full_image_side(train: ClassifyTrainConfig) -> int:
    """The full-image view's shorter side: the one at which objects appear at
    the mean scale they had in the training crops (the train-test resolution
    discrepancy of Touvron et al., NeurIPS 2019).

    The paper's crops (``crop_area`` None) are ``crop``-pixel windows of the
    image at shorter side ``resize``: the view is at ``resize``, as in the
    paper. A scale-augmented crop, a window of area fraction ``a`` of that
    image resized to ``crop`` pixels, enlarges a square image's objects by
    ``crop / (resize * sqrt(a))``; over ``a`` uniform in [lo, hi] the mean
    factor is ``crop / resize * 2 (sqrt(hi) - sqrt(lo)) / (hi - lo)``, matched
    at shorter side ``crop * 2 (sqrt(hi) - sqrt(lo)) / (hi - lo)``: 128 for
    96-pixel crops of 25-100% of the image, against ``resize`` 110.
    """
    if train.crop_area is None:
        return train.resize
    low, high = train.crop_area
    mean_inverse_side = 2 / (math.sqrt(high) + math.sqrt(low))  # E[a ** -0.5], also where low == high
    return round(train.crop * mean_inverse_side)


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
    """Top-1 and top-5 error of a run on ``data/split`` with view mode ``views``,
    with each class's top-1 error and the confusion counts."""
    model, config, classes = load_classifier(run_dir)
    dataset = read_image_folder(data, split, classes)
    for item in dataset.skipped:
        log(f"skipped: {item}")
    resize = full_image_side(config.train) if views == "full" else config.train.resize
    top1 = top5 = total = 0
    confusion = [[0] * len(classes) for _ in classes]  # rows: the true class; columns: the top-1 guess
    started = time.perf_counter()
    for path, label in dataset.samples:
        try:
            image = to_tensor(load_image(path))
        except ImageError as error:
            log(f"skipped: {error}")
            continue
        probs = predict_views(model, image, views, resize, config.train.crop)
        ranked = probs.argsort(descending=True)
        top1 += int(ranked[0] == label)
        confusion[label][int(ranked[0])] += 1
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
        # Where the errors are: each class's top-1 error (None without test
        # images) and the confusion counts, so a class the net cannot tell
        # from another shows by name.
        "classes": list(classes),
        "per_class_top1_error": {name: (1 - row[k] / sum(row)) if sum(row) else None
                                 for k, (name, row) in enumerate(zip(classes, confusion))},
        "confusion": confusion,
    }
