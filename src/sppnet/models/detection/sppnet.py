"""SPP-net's detection model (SPEC sections 4 and 5): its head (the
pre-trained classifier's fc6 and fc7 on windows pooled from frozen conv5
maps, and a new (K+1)-way fc8 for fine-tuning) and the whole detector at
test time. Shapes: R windows, C * B pooled values, H the fc width, K object
classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from sppnet.data.transforms import normalise
from sppnet.fast_path import autocast, check_precision
from sppnet.models.box_regression import BoxRegressors
from sppnet.models.detection.postprocess import (
    MirrorView, check_test_call, empty_detections, postprocess, refine_windows,
)
from sppnet.models.scoring import check_scorer, window_scores
from sppnet.models.svm import LinearSVMs
from sppnet.models.windows import (
    CachedMap, WindowPooler, cached_window_pooler, image_maps, one_image_rois, pool_windows, pooled_fc6,
)
from sppnet.ops import boxes_to_cells, clip_boxes, roi_spp
from sppnet.ops.tracing import shape_of
from sppnet.timing import StageTimer, stage

__all__ = ["SPPNetHead", "SPPNet"]


class SPPNetHead(nn.Module):
    """fc6 -> fc7 (-> fc8 while fine-tuning) on pooled windows ``(R, C * B)``."""

    def __init__(self, fc6: nn.Sequential, fc7: nn.Sequential, num_classes: int) -> None:
        super().__init__()
        self.fc6, self.fc7 = fc6, fc7
        self.fc8 = nn.Linear(fc7[0].out_features, num_classes)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def features(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc7(self.fc6(pooled))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.features(pooled))


class SPPNet(nn.Module):
    """SPP-net's detector at test time (SPEC section 5), on tensors:
    ``model(images, proposals)`` -> ``[{"boxes" (D, 4), "labels" (D,),
    "scores" (D,)}]``, torchvision's detection contract, for ``images`` float
    ``[3, H, W]`` in [0, 1] and ``proposals`` ``(R, 4)`` xyxy in their pixels.

    Each image's conv5 maps are computed once per scale (``image_maps``),
    every window is pooled from the map of its scale (``window_target``) with
    the pyramid ``levels``, and goes through fc6/fc7 (a block at a time,
    ``pooled_fc6``), the per-class scorer (the SVMs or fc8's softmax,
    ``scorer``), per-class NMS and box regression (``postprocess``).

    Training is staged, not one loss (``sppnet.engine.sppnet_detection``:
    fc fine-tuning on cached pooled windows, SVMs with hard negatives, box
    regression), so the module has no training forward. The engine's
    ``SPPNetDetector`` feeds it maps read from the feature cache
    (``detect_on_maps``) instead of computing them."""

    def __init__(self, trunk: nn.Module, levels: Sequence[int], head: SPPNetHead, svms: LinearSVMs | None,
                 svm_scale: float, regressors: BoxRegressors | None, scales: Sequence[int], max_side: int | None,
                 window_target: float, nms: float, top_k: int, scorer: str = "svm", flip: bool = False) -> None:
        super().__init__()
        self.trunk, self.head, self.svms = trunk, head, svms
        self.levels = tuple(levels)
        self.svm_scale = float(svm_scale)
        self.regressors = regressors
        self.scales, self.max_side, self.window_target = tuple(scales), max_side, float(window_target)
        self.nms, self.top_k = nms, top_k
        self.nms_sigma: float | None = None  # Gaussian soft-NMS instead of nms (TestConfig.nms_sigma)
        self.box_vote: float | None = None  # box voting's IoU (TestConfig.box_vote)
        self.regress_first = False  # NMS over the regressed windows (TestConfig.regress_first)
        self.refine = 0  # windows per class regressed and scored again (TestConfig.refine)
        self.scorer = check_scorer(scorer)
        self.flip = flip  # flip testing: each window scored in the image and in its mirror (postprocess)
        self.precision = "fp32"  # "bf16": the CPU fast path (sppnet.fast_path)
        self.timer: StageTimer | None = None  # set to collect seconds per stage
        self.fc6_block = 1024  # windows pooled and multiplied by fc6 at a time (pooled_fc6)

    def set_precision(self, precision: str) -> SPPNet:
        self.precision = check_precision(precision)
        return self

    def conv_maps(self, image: torch.Tensor) -> dict[int, CachedMap]:
        """One image, float ``[3, H, W]`` in [0, 1] -> its conv5 map at each scale."""
        self.trunk.eval()
        return image_maps(self.trunk, normalise(image), self.scales, self.max_side, self.precision)

    @torch.no_grad()
    def window_features(self, maps: Mapping[int, CachedMap], boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool5 ``(R, C * B)`` of each window pooled from the map of its
        scale, and fc7 ``(R, H)``, all at once (for SVM and regressor training)."""
        with stage(self.timer, "pooling"):
            pooled = pool_windows(maps, boxes, self.trunk.geometry, self.levels, target=self.window_target)
        self.head.eval()
        with stage(self.timer, "fc"), autocast(self.precision):
            fc7 = self.head.features(pooled).float()
        return pooled, fc7

    @torch.no_grad()
    def detect_on_maps(self, maps: Mapping[int, CachedMap], boxes: torch.Tensor, image_size: tuple[int, int],
                       box_regression: bool = True, mirror_maps: Mapping[int, CachedMap] | None = None) -> dict:
        """One image's detections from its maps (scale -> map) and windows
        ``(R, 4)``; ``image_size``: (height, width). Windows are pooled and
        multiplied by fc6 a block at a time (``pooled_fc6``): the same scores
        as ``window_features``, without every window's pool5 at once.
        ``mirror_maps``: the mirrored image's maps, for flip testing
        (``postprocess``); needed when ``flip`` is set."""
        boxes = boxes.float().reshape(-1, 4)
        if len(boxes) == 0:
            return empty_detections()
        width = float(image_size[1])
        if self.flip and mirror_maps is None:
            raise ValueError("flip testing needs the mirrored image's maps")
        scores, features, mirror = self._scored(maps, mirror_maps, boxes, width)
        regressors = self.regressors if box_regression else None
        if self.refine and regressors is not None:  # the regressed windows pooled from the same maps: no conv pass
            boxes, scores, features, mirror = refine_windows(
                boxes, scores, features, mirror, image_size, self.refine, regressors,
                lambda moved: self._scored(maps, mirror_maps, moved, width), self.timer)
        return postprocess(boxes, scores, image_size, self.nms, self.top_k, regressors, features, self.timer, mirror,
                           self.nms_sigma, self.box_vote, self.regress_first)

    def _scored(self, maps: Mapping[int, CachedMap], mirror_maps: Mapping[int, CachedMap] | None,
                boxes: torch.Tensor, width: float):
        """Windows ``(R, 4)`` scored in the image (and in its mirror with flip
        testing): ``(scores (R, K), pool5 of rows, MirrorView or None)``."""
        scores, pooler = self._scores(maps, boxes)
        mirror = None
        if self.flip:
            mirror_scores, mirror_pooler = self._scores(mirror_maps, boxes, width)
            mirror = MirrorView(mirror_scores, mirror_pooler.pool, width)
        return scores, pooler.pool, mirror

    def _scores(self, maps: Mapping[int, CachedMap], boxes: torch.Tensor,
                mirror_width: float | None = None) -> tuple[torch.Tensor, WindowPooler]:
        """The scorer's ``(R, K)`` for windows pooled from ``maps`` (those of
        the mirrored image, ``mirror_width`` wide, when it is given), and the pooler."""
        with stage(self.timer, "pooling"):
            pooler = cached_window_pooler(maps, boxes, self.trunk.geometry, self.levels, target=self.window_target,
                                          flipped=mirror_width is not None, image_width=mirror_width)
        self.head.eval()
        with autocast(self.precision):
            hidden = pooled_fc6(pooler, self.head.fc6, self.fc6_block, self.timer)
            with stage(self.timer, "fc"):
                fc7 = self.head.fc7(hidden).float()
        with stage(self.timer, "classifier"):
            return window_scores(fc7, self.scorer, self.svms, self.svm_scale, self.head.fc8), pooler

    def score_resized(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Testing at one scale on an image already resized and normalised,
        ``(1, 3, H, W)``, with ``boxes (R, 4)`` in its pixels -> ``(scores (R,
        K) of the scorer, pred_boxes (R, K, 4))``, every window regressed by
        every class's regressor and clipped: the graph ``sppnet.export``
        traces (sizes stay tensors, all windows pooled at once)."""
        if self.svms is None or self.regressors is None:
            raise ValueError("this SPP-net has no SVMs or box regressors yet: finish its training first")
        features = self.trunk(image)
        cells = boxes_to_cells(boxes, self.trunk.geometry, "sppnet", feature_size=shape_of(features)[2:])
        pooled = roi_spp(features, one_image_rois(cells), self.levels)
        scores = window_scores(self.head.features(pooled), self.scorer, self.svms, self.svm_scale, self.head.fc8)
        return scores, clip_boxes(self.regressors.all_classes(pooled, boxes), shape_of(image)[2:])

    @torch.no_grad()
    def forward(self, images: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor],
                targets: Sequence[dict] | None = None) -> list[dict]:
        check_test_call(self, images, proposals, targets, "sppnet.engine.sppnet_detection.train_sppnet")
        results = []
        for image, boxes in zip(images, proposals):
            with stage(self.timer, "conv"):
                maps = self.conv_maps(image)
                mirror_maps = self.conv_maps(image.flip(-1)) if self.flip else None
            results.append(self.detect_on_maps(maps, boxes, tuple(image.shape[-2:]), mirror_maps=mirror_maps))
        return results

