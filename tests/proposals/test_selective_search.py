"""sppnet.proposals.selective_search against OpenCV's own selective search and glibc's rand()."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from sppnet.proposals.selective_search import c_rand, selective_search
from tests.proposals.test_proposals import LAYOUTS, make_image


def blobs(seed: int, height: int = 110, width: int = 150) -> np.ndarray:
    """Smooth random colour blobs on noise: many segments, few exact ties."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8), (3, 3), 0)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


IMAGES = [make_image(rects, seed=i) for i, rects in enumerate(LAYOUTS)] + [blobs(seed) for seed in range(3)]


def test_c_rand_is_glibcs_rand():
    # glibc's rand() after srand(1), as printed by any C program on Linux;
    # srand(0) is srand(1) there.
    first = [1804289383, 846930886, 1681692777, 1714636915, 1957747793, 424238335, 719885386]
    assert c_rand(1, 7).tolist() == first
    assert c_rand(0, 7).tolist() == first
    assert c_rand(5, 3).tolist() != first[:3]
    with pytest.raises(ValueError, match="seed"):
        c_rand(-1, 3)


@pytest.mark.parametrize("index", range(len(IMAGES)))
def test_same_boxes_as_opencv(index):
    """The grouping runs OpenCV's segmentations and strategies itself: it must
    find exactly the regions OpenCV's process() finds (order aside)."""
    bgr = IMAGES[index]
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    search.switchToSelectiveSearchFast()
    reference = {tuple(box) for box in np.asarray(search.process()).reshape(-1, 4).tolist()}
    ours = selective_search(bgr, quality=False)
    assert len(ours) == len(reference)  # no duplicates either
    assert {tuple(box) for box in ours.astype(int).tolist()} == reference


def test_small_regions_rank_first_and_every_box_lies_in_the_image():
    bgr = IMAGES[3]
    boxes = selective_search(bgr)
    height, width = bgr.shape[:2]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] >= 1).all()
    assert (boxes[:, 0] + boxes[:, 2] <= width).all() and (boxes[:, 1] + boxes[:, 3] <= height).all()
    area = boxes[:, 2] * boxes[:, 3]
    half = len(boxes) // 2
    assert np.median(area[:half]) < np.median(area[half:])  # rank = uniform draw x level


def test_threads_get_the_same_lists_as_a_serial_run():
    """No process-wide state: concurrent searches give the serial results."""
    serial = [selective_search(image) for image in IMAGES]
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = list(pool.map(selective_search, IMAGES * 2))
    for i, boxes in enumerate(threaded):
        np.testing.assert_array_equal(boxes, serial[i % len(IMAGES)])


def test_rejects_what_is_not_a_bgr_uint8_image():
    with pytest.raises(ValueError, match="BGR uint8"):
        selective_search(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="BGR uint8"):
        selective_search(np.zeros((10, 10, 3), np.float32))
