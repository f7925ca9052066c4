"""Selective search (Uijlings et al., IJCV 2013) with a ranking that owns its randomness.

OpenCV's ``SelectiveSearchSegmentation.process()`` ranks every region by
``rand() / RAND_MAX * level`` with the C library's process-wide ``rand()``.
Seeding it with ``srand`` right before the call made the order repeatable
most of the time, but not always: in two of nine fresh-clone test runs the
same image got the same boxes in another order (the cause, some other draw
from the shared generator, could not be pinned down). The order matters,
since ``max_proposals`` keeps the first boxes.

So the grouping loop lives here and draws its ranks from its own copy of
that generator (glibc's ``rand()`` after ``srand(0)``, reproduced exactly, so
the lists are the ones sppnet has always computed, on any platform), while
everything else is OpenCV's own code: the colour
conversions, Felzenszwalb's graph segmentation (``createGraphSegmentation``)
and the colour / texture / size / fill similarity strategies, driven through
their public ``setImage`` / ``get`` / ``merge`` API with the settings of
``switchToSelectiveSearchFast`` and ``switchToSelectiveSearchQuality``. The
result is a pure function of the image, safe in any thread or process.

One deliberate difference: when two pairs are equally similar, OpenCV's
unstable ``std::sort`` decides which merges first; here the pair of lower
region indices does, so ties no longer depend on the sort implementation.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

__all__ = ["c_rand", "selective_search"]

# Seed of the ranking stream: every image is ranked with the same stream, as
# OpenCV's ranks were after srand(0).
RANK_SEED = 0
_RAND_MAX = 2147483647
_SIGMA = 0.8  # Gaussian smoothing before the graph segmentation (OpenCV's default for both modes)
_BASE_K, _INC_K = 150, 150


def selective_search(bgr: np.ndarray, quality: bool = False, seed: int = RANK_SEED) -> np.ndarray:
    """Region proposals for a BGR uint8 image, best-ranked first.

    Returns ``float64[P, 4]`` boxes as ``(x, y, w, h)`` in OpenCV's rectangle
    convention (``x + w`` is the continuous right edge), without duplicates.
    ``quality`` selects the "quality" setting (five colour spaces, five ``k``,
    four strategies) instead of "fast" (two colour spaces, three ``k``, two).
    """
    import cv2

    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"selective search needs a BGR uint8 image [H, W, 3], got {bgr.shape} {bgr.dtype}")
    seg = cv2.ximgproc.segmentation
    images, ks, strategies = _setting(cv2, seg, np.ascontiguousarray(bgr), quality)

    all_boxes, all_levels = [], []
    image_id = 0
    for image in images:
        for k in ks:
            segmentation = seg.createGraphSegmentation(sigma=_SIGMA, k=float(k), min_size=100)
            labels = segmentation.processImage(image).astype(np.int32, copy=False)
            nb_segs = int(labels.max()) + 1
            sizes = np.bincount(labels.ravel(), minlength=nb_segs).astype(np.int32).reshape(-1, 1)
            rects = _bounding_rects(labels, nb_segs)
            pairs = _neighbour_pairs(labels)
            for strategy in strategies:
                boxes, levels = _hierarchical_grouping(strategy, image, labels, sizes, rects, pairs, image_id)
                all_levels.append(levels)
                all_boxes.append(boxes)
            image_id += 1

    boxes, levels = np.concatenate(all_boxes), np.concatenate(all_levels)
    # One draw per region, in the order OpenCV draws them; lower ranks first.
    # A region's rank grows with its level, so small regions tend to come first.
    ranks = c_rand(seed, len(levels)) / _RAND_MAX * levels
    order = np.argsort(ranks, kind="stable")
    boxes = boxes[order]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)].astype(np.float64)


def c_rand(seed: int, count: int) -> np.ndarray:
    """The first ``count`` values of glibc's ``rand()`` after ``srand(seed)``
    (its default TYPE_3 additive feedback generator), as ``float64``."""
    if not 0 <= seed < 2**31:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    state = [seed or 1] + [0] * (count + 343)
    for i in range(1, 31):
        state[i] = (16807 * state[i - 1]) % 2147483647
    for i in range(31, 34):
        state[i] = state[i - 31]
    for i in range(34, count + 344):
        state[i] = (state[i - 31] + state[i - 3]) & 0xFFFFFFFF
    return np.asarray(state[344:], dtype=np.float64) // 2


def _setting(cv2: Any, seg: Any, bgr: np.ndarray, quality: bool) -> tuple[list[np.ndarray], list[int], list[Any]]:
    """The colour spaces, graph-segmentation ``k`` values and similarity
    strategies of OpenCV's ``switchToSelectiveSearchFast`` / ``...Quality``."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)
    create = {
        "color": seg.createSelectiveSearchSegmentationStrategyColor,
        "fill": seg.createSelectiveSearchSegmentationStrategyFill,
        "texture": seg.createSelectiveSearchSegmentationStrategyTexture,
        "size": seg.createSelectiveSearchSegmentationStrategySize,
    }
    all_four = seg.createSelectiveSearchSegmentationStrategyMultiple(
        create["color"](), create["fill"](), create["texture"](), create["size"]())
    no_colour = seg.createSelectiveSearchSegmentationStrategyMultiple(
        create["fill"](), create["texture"](), create["size"]())
    if not quality:
        return [hsv, lab], [_BASE_K + i * _INC_K for i in range(3)], [all_four, no_colour]
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    # The paper's fourth colour space is hue; OpenCV's code adds the hue plane
    # and then splits the BGR image into the same Mat, so the plane it searches
    # is blue. Kept, so that both find the same regions.
    blue = np.ascontiguousarray(bgr[:, :, 0])
    rgi = np.ascontiguousarray(np.dstack([bgr[:, :, 2], bgr[:, :, 1], gray]))
    strategies = [all_four, no_colour, create["fill"](), create["size"]()]
    return [hsv, lab, gray, blue, rgi], [_BASE_K + i * _INC_K for i in range(5)], strategies


def _bounding_rects(labels: np.ndarray, nb_segs: int) -> np.ndarray:
    """``int64[nb_segs, 4]`` (x1, y1, x2, y2), x2/y2 exclusive, of each segment's pixels."""
    rows, cols = (index.ravel() for index in np.indices(labels.shape))
    flat = labels.ravel()
    x1, y1 = np.full(nb_segs, labels.shape[1]), np.full(nb_segs, labels.shape[0])
    x2, y2 = np.zeros(nb_segs, np.int64), np.zeros(nb_segs, np.int64)
    np.minimum.at(x1, flat, cols)
    np.minimum.at(y1, flat, rows)
    np.maximum.at(x2, flat, cols + 1)
    np.maximum.at(y2, flat, rows + 1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)


def _neighbour_pairs(labels: np.ndarray) -> np.ndarray:
    """``int64[N, 2]`` (i < j) of segments that touch, with OpenCV's rule: each
    pixel below and right of the first row and column is linked to its left,
    upper and upper-left neighbours."""
    here = labels[1:, 1:].ravel()
    pairs = [np.stack([here, other.ravel()], axis=1)
             for other in (labels[1:, :-1], labels[:-1, 1:], labels[:-1, :-1])]
    pairs = np.concatenate(pairs)
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
    return np.unique(pairs, axis=0).astype(np.int64)


def _hierarchical_grouping(strategy: Any, image: np.ndarray, labels: np.ndarray, sizes: np.ndarray,
                           rects: np.ndarray, pairs: np.ndarray, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge the two most similar neighbouring regions until one is left.

    Returns every region's box ``(x, y, w, h)`` (the segments first, then each
    merge in order) and its level (1 for a segment, one more than the deeper
    of its two parts for a merge). ``sizes`` is copied: the strategies read
    the working copy, which is updated in place after each merge as OpenCV does.
    """
    sizes = sizes.copy()  # OpenCV's strategies keep a view of this array and read it at every get()
    strategy.setImage(image, labels, sizes, image_id)
    boxes = [tuple(r) for r in rects.tolist()]
    levels = [1] * len(boxes)
    working_id = list(range(len(boxes)))  # the strategy's id of each region: the smallest of its segments
    neighbours: dict[int, set[int]] = {i: set() for i in range(len(boxes))}
    heap: list[tuple[float, int, int]] = []
    for i, j in pairs.tolist():
        neighbours[i].add(j)
        neighbours[j].add(i)
        heap.append((-strategy.get(i, j), i, j))
    heapq.heapify(heap)
    merged = set()
    while heap:
        _, a, b = heapq.heappop(heap)
        if a in merged or b in merged:
            continue  # a pair of a region that has since been merged
        id_a, id_b = working_id[a], working_id[b]
        strategy.merge(id_a, id_b)
        sizes[id_a, 0] += sizes[id_b, 0]
        sizes[id_b, 0] = sizes[id_a, 0]
        new = len(boxes)
        box_a, box_b = boxes[a], boxes[b]
        boxes.append((min(box_a[0], box_b[0]), min(box_a[1], box_b[1]), max(box_a[2], box_b[2]), max(box_a[3], box_b[3])))
        levels.append(max(levels[a], levels[b]) + 1)
        working_id.append(min(id_a, id_b))
        merged.update((a, b))
        around = (neighbours.pop(a) | neighbours.pop(b)) - {a, b}
        neighbours[new] = around
        for other in sorted(around):
            neighbours[other] -= {a, b}
            neighbours[other].add(new)
            heapq.heappush(heap, (-strategy.get(working_id[new], working_id[other]), other, new))
    xyxy = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return xywh, np.asarray(levels, dtype=np.float64)
