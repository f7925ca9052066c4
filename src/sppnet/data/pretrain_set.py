"""A generated stand-in for ImageNet: many shape classes, in context.

SPP-net keeps the pre-trained conv layers frozen, so its detections are only
as good as the trunk that ImageNet gave it. No weights can be downloaded here,
and a trunk trained only on a detection set's own few hundred objects has seen
too few distinct examples (benchmarks/RESULTS.md: 1000 training images instead
of 300 lift the held-out object crops from 79 to 89% right). This set plays
ImageNet's part: far more classes and instances than any detection set, none
of them a detection class of ``sppnet data synth`` or of the held-out sets, so
what the trunk learns here is edges, strokes, corners and figure against
ground, not the detection set's answers.

Each image is ``size`` x ``size`` pixels and shows one object of its class,
large (35-95% of the side), anywhere from centred to cut by the border, over
one of several kinds of background (colour noise, stripes, gradients, speckle,
clutter of lines and blobs), often with parts of other classes' objects at its
edges, as an ImageNet photo has other things in it. Classes (``PRETRAIN_CLASSES``):

- ``glyph-X``: the letters A-Z and the digits 2-9 in OpenCV's Hershey fonts
  (strokes of varying thickness, turned by up to 25 degrees);
- ``polygon-N``: filled polygons of 3-8 corners (any turn, corners jittered);
- ``outline-N``: the outlines of polygons of 3-6 corners.

Every object is stretched to a random aspect ratio (1:1.7 to 1.7:1) and
coloured at random, so neither size, shape of the box nor colour names the
class. Written as an image folder ``OUT/<split>/<class>/<n>.jpg`` that
``sppnet train classify`` reads; the same seed writes the same files.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = ["PRETRAIN_CLASSES", "render_pretrain_image", "synthesize_pretrain"]

_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789"
PRETRAIN_CLASSES: tuple[str, ...] = (
    tuple(f"glyph-{c}" for c in _GLYPHS)
    + tuple(f"polygon-{n}" for n in range(3, 9))
    + tuple(f"outline-{n}" for n in range(3, 7))
)
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN)
_CANVAS = 192  # each object is drawn once at this size, then warped into the image


def _object_mask(name: str, rng: np.random.Generator) -> np.ndarray:
    """A float32 mask of one object of class ``name``, cropped to its tight box."""
    canvas = np.zeros((_CANVAS, _CANVAS), np.uint8)
    kind, _, part = name.partition("-")
    if kind == "glyph":
        font = _FONTS[int(rng.integers(len(_FONTS)))]
        thickness = int(rng.integers(6, 22)) if font != cv2.FONT_HERSHEY_PLAIN else int(rng.integers(8, 26))
        scale = 4.0 if font != cv2.FONT_HERSHEY_PLAIN else 9.0
        (w, h), _ = cv2.getTextSize(part, font, scale, thickness)
        cv2.putText(canvas, part, ((_CANVAS - w) // 2, (_CANVAS + h) // 2), font, scale, 255, thickness, cv2.LINE_AA)
    else:
        corners = int(part)
        start = rng.uniform(0, 2 * math.pi)
        angles = start + 2 * math.pi * (np.arange(corners) + rng.uniform(-0.15, 0.15, corners)) / corners
        radii = rng.uniform(0.85, 1.0, corners) * (_CANVAS * 0.42)
        points = np.stack([_CANVAS / 2 + radii * np.cos(angles), _CANVAS / 2 + radii * np.sin(angles)], 1)
        points = np.round(points * 16).astype(np.int32)[None]  # 4 fractional bits
        if kind == "polygon":
            cv2.fillPoly(canvas, points, 255, cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(canvas, points, True, 255, int(rng.integers(10, 26)), cv2.LINE_AA, shift=4)
    ys, xs = np.nonzero(canvas > 127)
    return canvas[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.float32) / 255.0


def _place(mask: np.ndarray, size: int, box: tuple[float, float, float, float], angle: float) -> np.ndarray:
    """``mask`` stretched onto ``box`` (x1, y1, x2, y2) of a size x size image, turned by ``angle`` degrees."""
    h, w = mask.shape
    x1, y1, x2, y2 = box
    stretch = np.array([[(x2 - x1) / w, 0, x1], [0, (y2 - y1) / h, y1]], np.float64)
    turn = cv2.getRotationMatrix2D(((x1 + x2) / 2, (y1 + y2) / 2), angle, 1.0)
    affine = turn @ np.vstack([stretch, [0, 0, 1]])
    return cv2.warpAffine(mask, affine, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 ``[size, size, 3]`` background in [0, 1], of one of five kinds."""
    kind = int(rng.integers(5))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:  # smooth colour noise
        cells = int(rng.integers(2, 9))
        image = cv2.resize(rng.random((cells, cells, 3), np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # stripes of two colours
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 40)
        wave = 0.5 + 0.5 * np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
        a, b = rng.random(3, np.float32), rng.random(3, np.float32)
        image = wave[..., None] * a + (1 - wave[..., None]) * b
    elif kind == 2:  # a linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / size
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        a, b = rng.random(3, np.float32), rng.random(3, np.float32)
        image = ramp[..., None] * a + (1 - ramp[..., None]) * b
    elif kind == 3:  # speckle on a flat colour
        image = rng.random(3, np.float32) + rng.normal(0, rng.uniform(0.03, 0.2), (size, size, 3)).astype(np.float32)
    else:  # clutter: lines and blobs over a flat colour
        image = np.ascontiguousarray(np.broadcast_to(rng.random(3, np.float32), (size, size, 3)))
        for _ in range(int(rng.integers(3, 12))):
            colour = tuple(float(c) for c in rng.random(3))
            p = rng.integers(0, size, 4)
            if rng.random() < 0.5:
                cv2.line(image, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, int(rng.integers(1, 5)), cv2.LINE_AA)
            else:
                axes = (int(rng.integers(2, size // 6)), int(rng.integers(2, size // 6)))
                cv2.ellipse(image, (int(p[0]), int(p[1])), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    return np.clip(image, 0, 1).astype(np.float32)


def _paint(image: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> None:
    """Composite a random colour (flat, or with a little texture) through ``alpha``, in place."""
    background_mean = (image * alpha[..., None]).sum((0, 1)) / max(float(alpha.sum()), 1e-6)
    for _ in range(8):  # an object the colour of what lies under it would not be seen
        colour = rng.random(3).astype(np.float32)
        if np.abs(colour - background_mean).sum() > 0.4:
            break
    paint = colour + rng.normal(0, rng.uniform(0, 0.06), image.shape).astype(np.float32)
    image[:] = alpha[..., None] * paint + (1 - alpha[..., None]) * image


def _random_box(size: int, rng: np.random.Generator, low: float, high: float, cut: bool) -> tuple[float, ...]:
    side = size * rng.uniform(low, high)
    aspect = math.exp(rng.uniform(-0.55, 0.55))
    w, h = side * math.sqrt(aspect), side / math.sqrt(aspect)
    if cut:  # the centre anywhere in the image: the border may cut the object
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
    else:  # the whole object inside the image where it fits
        cx = rng.uniform(min(w / 2, size / 2), max(size - w / 2, size / 2))
        cy = rng.uniform(min(h / 2, size / 2), max(size - h / 2, size / 2))
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def render_pretrain_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 ``[size, size, 3]`` RGB image of class ``PRETRAIN_CLASSES[label]``."""
    if not 0 <= label < len(PRETRAIN_CLASSES):
        raise ValueError(f"label must be in [0, {len(PRETRAIN_CLASSES)}), got {label}")
    if size < 16:
        raise ValueError(f"pre-training images need at least 16 x 16 pixels, got {size}")
    image = _background(size, rng)
    for _ in range(int(rng.integers(0, 3))):  # parts of other objects at the edges
        other = int(rng.integers(len(PRETRAIN_CLASSES)))
        x1, y1, x2, y2 = _random_box(size, rng, 0.3, 0.6, cut=True)
        dx, dy = rng.choice([-1, 1], 2) * size * 0.45
        box = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
        _paint(image, _place(_object_mask(PRETRAIN_CLASSES[other], rng), size, box, rng.uniform(-180, 180)), rng)
    name = PRETRAIN_CLASSES[label]
    angle = rng.uniform(-25, 25) if name.startswith("glyph") else rng.uniform(-180, 180)
    box = _random_box(size, rng, 0.35, 0.95, cut=rng.random() < 0.25)
    _paint(image, _place(_object_mask(name, rng), size, box, angle), rng)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def synthesize_pretrain(out: str | Path, train: int = 13200, test: int = 880, size: int = 128, seed: int = 0,
                        jpeg_quality: int = 92) -> dict[str, int]:
    """Write ``OUT/<split>/<class>/<n>.jpg``: ``train`` and ``test`` images,
    the classes of ``PRETRAIN_CLASSES`` taking turns. Returns the number of
    images written per split."""
    if train < len(PRETRAIN_CLASSES) or test < 0:
        raise ValueError(f"need train >= {len(PRETRAIN_CLASSES)} (one image per class) and test >= 0, "
                         f"got train={train} test={test}")
    root = Path(out)
    rng = np.random.default_rng(seed)
    counts = {}
    for split, total in (("train", train), ("test", test)):
        for name in PRETRAIN_CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for n in range(total):
            label = n % len(PRETRAIN_CLASSES)
            image = render_pretrain_image(label, size, rng)
            Image.fromarray(image).save(root / split / PRETRAIN_CLASSES[label] / f"{n:06d}.jpg", quality=jpeg_quality)
        counts[split] = total
    return counts
