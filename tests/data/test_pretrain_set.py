"""The generated pre-training set: its classes are what they say, and it is reproducible."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sppnet.data.pretrain_set import PRETRAIN_CLASSES, _object_mask, render_pretrain_image, synthesize_pretrain


def _corners(mask: np.ndarray) -> int:
    """Corners of the mask's outer contour, as OpenCV's polygon fit counts them."""
    binary = (mask > 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(np.pad(binary, 4), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=cv2.contourArea)
    return len(cv2.approxPolyDP(outline, 0.04 * cv2.arcLength(outline, True), True))


@pytest.mark.parametrize("corners", [3, 4, 5])
def test_polygons_have_their_corners(corners):
    rng = np.random.default_rng(corners)
    for _ in range(5):
        assert _corners(_object_mask(f"polygon-{corners}", rng)) == corners
        assert _corners(_object_mask(f"outline-{corners}", rng)) == corners


def test_outlines_are_hollow_and_polygons_filled():
    rng = np.random.default_rng(0)
    for corners in (3, 4, 5, 6):
        filled = _object_mask(f"polygon-{corners}", rng) > 0.5
        hollow = _object_mask(f"outline-{corners}", rng) > 0.5
        h, w = filled.shape
        assert filled[h // 2, w // 2] and not hollow[h // 2, w // 2]


def test_glyphs_differ_from_one_another():
    rng = np.random.default_rng(0)
    masks = {}
    for name in ("glyph-A", "glyph-L", "glyph-O", "glyph-T"):
        mask = _object_mask(name, rng)
        masks[name] = cv2.resize(mask, (32, 32), interpolation=cv2.INTER_AREA) > 0.5
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (masks[a] != masks[b]).mean() > 0.1, (a, b)
    assert masks["glyph-O"][16, 16] == 0 and masks["glyph-O"][16, :8].any()  # a ring: hollow in the middle


def test_images_are_reproducible_and_show_an_object():
    first = [render_pretrain_image(label, 64, np.random.default_rng(7)) for label in range(len(PRETRAIN_CLASSES))]
    again = [render_pretrain_image(label, 64, np.random.default_rng(7)) for label in range(len(PRETRAIN_CLASSES))]
    for a, b in zip(first, again):
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in first}) == len(first)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="label"):
        render_pretrain_image(len(PRETRAIN_CLASSES), 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="16 x 16"):
        render_pretrain_image(0, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="train >= 44"):
        synthesize_pretrain("unused", train=10)


def test_folder_layout_and_balance(tmp_path):
    counts = synthesize_pretrain(tmp_path, train=2 * len(PRETRAIN_CLASSES), test=len(PRETRAIN_CLASSES), size=32)
    assert counts == {"train": 88, "test": 44}
    for name in PRETRAIN_CLASSES:
        assert len(list((tmp_path / "train" / name).glob("*.jpg"))) == 2
        assert len(list((tmp_path / "test" / name).glob("*.jpg"))) == 1
