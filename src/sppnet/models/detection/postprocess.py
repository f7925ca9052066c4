"""From window scores to one image's detections, for the detectors that score
each proposal once (SPP-net, R-CNN): per-class NMS, box regression of the
windows NMS kept, clipping to the image (SPEC sections 4 and 7); or, with
``regress_first``, every window regressed first and NMS over each class's
regressed boxes.

Fast R-CNN regresses every window per class before its NMS, so it has its
own step (``FastRCNN._score``).

Iterative localisation (``test.refine``, ``refine_windows``): each class's best
windows regressed and scored again, joining the windows before NMS.

Flip testing (``test.flip``): each window is scored in the image and, mirrored,
in the image's mirror; the two scores are averaged before NMS and the two
regressed boxes (the mirror's mirrored back) after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sppnet.models.box_regression import BoxRegressors
from sppnet.ops import class_nms, clip_boxes, mirror_boxes, vote_boxes
from sppnet.timing import StageTimer, stage

__all__ = ["MirrorView", "empty_detections", "postprocess", "refine_windows", "check_test_call"]


@dataclass
class MirrorView:
    """The same windows seen in the horizontally mirrored image (flip
    testing): their ``scores (R, K)`` and, for the windows NMS keeps, the
    features the box regressors read, in the mirror; ``width``: the image's."""

    scores: torch.Tensor
    regression_features: Callable[[torch.Tensor], torch.Tensor]
    width: float


def empty_detections() -> dict:
    """The detections of an image with no windows."""
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, image_size: tuple[int, int], nms: float, top_k: int,
                regressors: BoxRegressors | None, regression_features: Callable[[torch.Tensor], torch.Tensor],
                timer: StageTimer | None = None, mirror: MirrorView | None = None,
                soft_sigma: float | None = None, box_vote: float | None = None,
                regress_first: bool = False) -> dict:
    """``boxes (R, 4)`` with ``scores (R, K)`` -> ``{"boxes" (D, 4), "labels"
    (D,), "scores" (D,)}``.

    ``regressors`` None skips box regression; otherwise the windows NMS kept
    (their indices into ``boxes``) are passed to ``regression_features`` for
    the features the regressors read (pool5). ``image_size``: (height, width).
    ``mirror``: the windows in the mirrored image too (flip testing).
    ``soft_sigma``: Gaussian soft-NMS instead of ``nms`` (``class_nms``).
    ``box_vote``: box voting at this IoU (``vote_boxes``): every window is
    then regressed by every class's regressor, to vote; without
    ``regressors`` the windows vote as they are. ``regress_first``: every
    window is regressed by every class before NMS, which then compares the
    regressed boxes of each class (Fast R-CNN's order) instead of the
    proposals.
    """
    if mirror is not None:
        scores = (scores + mirror.scores) / 2
    candidates = boxes
    every_window = regressors is not None and (regress_first or box_vote is not None)
    if every_window:  # every window by every class: NMS compares them (regress_first), or they vote
        with stage(timer, "classifier"):
            everyone = torch.arange(len(boxes))
            candidates = clip_boxes(regress_windows(everyone, boxes, regressors, regression_features, mirror), image_size)
    with stage(timer, "nms"):
        window, labels, out_boxes, out_scores = class_nms(candidates if regress_first else boxes, scores, nms, top_k,
                                                          soft_sigma)
    if regressors is not None and not regress_first:  # NMS ran over the proposals: their regressed boxes
        if every_window:
            out_boxes = candidates[window, labels - 1]
        else:  # only the windows NMS kept, each for its class
            with stage(timer, "classifier"):
                regressed = regress_windows(window, boxes, regressors, regression_features, mirror)
            out_boxes = regressed[torch.arange(len(window)), labels - 1]
    if box_vote is not None:
        with stage(timer, "nms"):
            out_boxes = vote_boxes(out_boxes, labels, candidates, scores, box_vote)
    return {"boxes": clip_boxes(out_boxes, image_size), "labels": labels, "scores": out_scores}


_REGRESSION_BLOCK = 256  # windows whose features are fetched at once (SPP-net: 256 x 12,800 pool5 floats)


def regress_windows(window: torch.Tensor, boxes: torch.Tensor, regressors: BoxRegressors,
             regression_features: Callable[[torch.Tensor], torch.Tensor], mirror: MirrorView | None) -> torch.Tensor:
    """The windows ``window`` (indices into ``boxes``) regressed by every
    class, ``(W, K, 4)``, a block of windows' features at a time; with
    ``mirror`` (flip testing), averaged with their regression in the mirrored
    image, mirrored back."""
    blocks = [boxes.new_zeros((0, regressors.weights.shape[0] - 1, 4))]
    for start in range(0, len(window), _REGRESSION_BLOCK):
        chosen = window[start: start + _REGRESSION_BLOCK]
        regressed = regressors.all_classes(regression_features(chosen), boxes[chosen])
        if mirror is not None:
            width = mirror.width
            seen = regressors.all_classes(mirror.regression_features(chosen), mirror_boxes(boxes[chosen], width))
            regressed = (regressed + mirror_boxes(seen.reshape(-1, 4), width).reshape(seen.shape)) / 2
        blocks.append(regressed)
    return torch.cat(blocks)


def refine_windows(boxes: torch.Tensor, scores: torch.Tensor,
                   regression_features: Callable[[torch.Tensor], torch.Tensor], mirror: MirrorView | None,
                   image_size: tuple[int, int], count: int, regressors: BoxRegressors,
                   score_windows: Callable[[torch.Tensor], tuple], timer: StageTimer | None = None) -> tuple:
    """Iterative localisation, one step (Gidaris & Komodakis 2015, section 4;
    ``TestConfig.refine``): each class's ``count`` best-scored windows (the
    scores averaged with the mirror's under flip testing) are regressed by
    that class's regressor and clipped, and the regressed boxes are scored by
    ``score_windows(moved) -> (scores (M, K), regression_features, mirror
    or None)`` and join the windows. A window at IoU 0.3-0.5 with an object
    scores as background; its regressed box, nearer the object, is scored as
    what it now frames. Returns ``(boxes, scores, regression_features,
    mirror)`` of the joined windows, the given ones first; unchanged when
    every regressed box collapses at the image's border."""
    seen = scores if mirror is None else (scores + mirror.scores) / 2
    count = min(count, len(boxes))
    with stage(timer, "classifier"):
        moved = [regress_windows(seen[:, k].topk(count).indices, boxes, regressors, regression_features, mirror)[:, k]
                 for k in range(seen.shape[1])]
        moved = clip_boxes(torch.cat(moved), image_size)
        moved = moved[(moved[:, 2] - moved[:, 0] >= 1) & (moved[:, 3] - moved[:, 1] >= 1)]
    if len(moved) == 0:
        return boxes, scores, regression_features, mirror
    new_scores, new_features, new_mirror = score_windows(moved)
    if mirror is not None:
        mirror = MirrorView(torch.cat([mirror.scores, new_mirror.scores]),
                            _joined(mirror.regression_features, len(boxes), new_mirror.regression_features),
                            mirror.width)
    return (torch.cat([boxes, moved]), torch.cat([scores, new_scores]),
            _joined(regression_features, len(boxes), new_features), mirror)


def _joined(first: Callable[[torch.Tensor], torch.Tensor], count: int,
            second: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The features of rows of two window sets one after the other: rows
    below ``count`` from ``first``, the others from ``second``."""
    def features(rows: torch.Tensor) -> torch.Tensor:
        ahead = rows < count
        a, b = first(rows[ahead]), second(rows[~ahead] - count)
        out = a.new_empty((len(rows), a.shape[1]))
        out[ahead], out[~ahead] = a, b.to(a.dtype)
        return out
    return features


def check_test_call(model: torch.nn.Module, images, proposals, targets, trainer: str) -> None:
    """The checks of a staged detector's ``forward`` (SPP-net, R-CNN): it
    only tests, on as many proposal sets as images; ``trainer`` names the
    function that trains it."""
    if model.training or targets is not None:
        raise RuntimeError(f"{type(model).__name__} trains in stages ({trainer}), not from one loss: "
                           "call the model in eval mode without targets")
    if len(images) != len(proposals):
        raise ValueError(f"got {len(images)} images but {len(proposals)} proposal sets")
