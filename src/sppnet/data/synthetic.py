"""Generated datasets, so that every pipeline runs offline.

Detection (``synthesize_detection``): a Pascal VOC-layout folder (see
``sppnet.data.voc``) of textured images with 1-5 objects each from
``SHAPE_CLASSES``, at widely varying scales (from ~16 pixels to most of the
image) and aspect ratios (1:3 to 3:1), overlapping one another (later objects
occlude earlier ones), cut by the image border (marked truncated), among
clutter (lines and blobs that belong to no class). Objects that are tiny or
mostly hidden are marked difficult, as VOC annotators would. Each box is the
tight box of the object's visible-or-occluded mask inside the image.

Classification (``synthesize_classification``): an image folder
``ROOT/<split>/<class>/<n>.jpg`` of single-shape images of varying size and
aspect ratio.

The same seed writes the same files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sppnet.data.records import BACKGROUND, ImageRecord
from sppnet.data.shapes import SHAPE_CLASSES, background, render_shape_image, shape_mask
from sppnet.data.voc import write_voc_annotation, write_voc_split

__all__ = ["DetectionSynthConfig", "synthesize_detection", "synthesize_classification"]


@dataclass(frozen=True)
class DetectionSynthConfig:
    train: int = 60  # images in the train split
    test: int = 30  # images in the test split
    seed: int = 0
    min_side: int = 200  # image sides are drawn from [min_side, max_side]
    max_side: int = 360
    max_objects: int = 5
    min_object: int = 16  # smallest object side in pixels
    difficult_below: int = 20  # objects smaller than this (or mostly hidden) are difficult
    clutter: int = 6  # clutter items per image (at most)
    truncate_fraction: float = 0.2  # objects placed so that the border may cut them
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if self.train < 0 or self.test < 0 or self.train + self.test == 0:
            raise ValueError(f"need a positive number of images, got train={self.train} test={self.test}")
        if not 32 <= self.min_side <= self.max_side:
            raise ValueError(f"image sides must satisfy 32 <= min_side <= max_side, got {self.min_side}, {self.max_side}")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand(1, generator=generator).item()


def _clutter(image: torch.Tensor, generator: torch.Generator, count: int) -> None:
    _, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    for _ in range(int(torch.randint(0, count + 1, (1,), generator=generator))):
        colour = torch.rand(3, 1, 1, generator=generator)
        cx, cy = _uniform(generator, 0, width), _uniform(generator, 0, height)
        if torch.rand(1, generator=generator).item() < 0.5:  # a thin line
            angle = _uniform(generator, 0, math.pi)
            length = _uniform(generator, 20, max(21, min(height, width)))
            along = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
            across = -(xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)
            mask = (along.abs() <= length / 2) & (across.abs() <= 1.5)
        else:  # a small irregular blob
            radius = _uniform(generator, 3, 9)
            wobble = 1 + 0.3 * torch.sin(3 * torch.atan2(ys - cy, xs - cx))
            mask = ((xs - cx) ** 2 + (ys - cy) ** 2).sqrt() <= radius * wobble
        image[:] = torch.where(mask, colour, image)


def _render_detection_image(config: DetectionSynthConfig, generator: torch.Generator):
    height = int(torch.randint(config.min_side, config.max_side + 1, (1,), generator=generator))
    width = int(torch.randint(config.min_side, config.max_side + 1, (1,), generator=generator))
    image = background(height, width, generator)
    _clutter(image, generator, config.clutter)
    count = int(torch.randint(1, config.max_objects + 1, (1,), generator=generator))
    objects = []  # (label, full mask)
    for _ in range(count):
        label = int(torch.randint(0, len(SHAPE_CLASSES), (1,), generator=generator))
        # Log-uniform size: many small objects, some that fill the image.
        side = math.exp(_uniform(generator, math.log(config.min_object), math.log(0.9 * min(height, width))))
        aspect = math.exp(_uniform(generator, -math.log(3), math.log(3)))
        half_w, half_h = side * math.sqrt(aspect) / 2, side / math.sqrt(aspect) / 2
        if torch.rand(1, generator=generator).item() < config.truncate_fraction:
            # Centre anywhere, up to a third of the object past the border.
            cx = _uniform(generator, -0.3 * half_w, width + 0.3 * half_w)
            cy = _uniform(generator, -0.3 * half_h, height + 0.3 * half_h)
        else:  # inside the image where the object fits
            cx = _uniform(generator, min(half_w, width / 2), max(width - half_w, width / 2))
            cy = _uniform(generator, min(half_h, height / 2), max(height - half_h, height / 2))
        mask = shape_mask(SHAPE_CLASSES[label], height, width, cx, cy, half_w, half_h)
        if int(mask.sum()) < 12:
            continue
        colour = torch.rand(3, 1, 1, generator=generator) * 0.8 + 0.1
        image = torch.where(mask, colour, image)
        truncated = cx - half_w < 0 or cy - half_h < 0 or cx + half_w > width or cy + half_h > height
        objects.append((label, mask, truncated))
    records = []
    for index, (label, mask, truncated) in enumerate(objects):
        visible = mask.clone()
        for _, later, _ in objects[index + 1:]:
            visible &= ~later
        if int(visible.sum()) == 0:
            continue  # fully hidden: not an object anyone could annotate
        rows = mask.any(1).nonzero().flatten()
        cols = mask.any(0).nonzero().flatten()
        box = [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
        small = min(box[2] - box[0], box[3] - box[1]) < config.difficult_below
        hidden = float(visible.sum()) / float(mask.sum()) < 0.3
        records.append((label + 1, box, small or hidden, truncated))
    return image, records


def _save_jpeg(image: torch.Tensor, path: Path, quality: int) -> None:
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, quality=quality)


def synthesize_detection(out: str | Path, config: DetectionSynthConfig = DetectionSynthConfig()) -> dict[str, int]:
    """Write a VOC-layout detection dataset with splits ``train`` and ``test``
    (and ``trainval`` = train). Returns counts of images and objects."""
    root = Path(out)
    generator = torch.Generator().manual_seed(config.seed)
    classes = (BACKGROUND, *SHAPE_CLASSES)
    counts = {"images": 0, "objects": 0, "difficult": 0, "truncated": 0}
    splits: dict[str, list[str]] = {"train": [], "test": []}
    for split, total in (("train", config.train), ("test", config.test)):
        for n in range(total):
            image_id = f"{split}_{n:06d}"
            image, objects = _render_detection_image(config, generator)
            image_path = root / "JPEGImages" / f"{image_id}.jpg"
            _save_jpeg(image, image_path, config.jpeg_quality)
            record = ImageRecord(
                image_id=image_id,
                image_path=image_path,
                width=image.shape[2],
                height=image.shape[1],
                boxes=torch.tensor([o[1] for o in objects], dtype=torch.float32).reshape(-1, 4),
                labels=torch.tensor([o[0] for o in objects], dtype=torch.int64),
                difficult=torch.tensor([o[2] for o in objects], dtype=torch.bool),
                truncated=torch.tensor([o[3] for o in objects], dtype=torch.bool),
            )
            write_voc_annotation(root, record, classes)
            splits[split].append(image_id)
            counts["images"] += 1
            counts["objects"] += record.num_objects
            counts["difficult"] += int(record.difficult.sum())
            counts["truncated"] += int(record.truncated.sum())
    for split, ids in splits.items():
        if ids:
            write_voc_split(root, split, ids)
    if splits["train"]:
        write_voc_split(root, "trainval", splits["train"])
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in SHAPE_CLASSES), encoding="utf-8")
    return counts


def synthesize_classification(
    out: str | Path, train: int = 200, test: int = 80, seed: int = 0, min_side: int = 64, max_side: int = 200
) -> dict[str, int]:
    """Write ``OUT/<split>/<class>/<n>.jpg``: ``train``/``test`` images per
    split, classes balanced, sides in [min_side, max_side]."""
    if train < 0 or test < 0 or train + test == 0:
        raise ValueError(f"need a positive number of images, got train={train} test={test}")
    if not 16 <= min_side <= max_side:
        raise ValueError(f"image sides must satisfy 16 <= min_side <= max_side, got {min_side}, {max_side}")
    root = Path(out)
    generator = torch.Generator().manual_seed(seed)
    counts = {}
    for split, total in (("train", train), ("test", test)):
        for n in range(total):
            label = n % len(SHAPE_CLASSES)
            height = int(torch.randint(min_side, max_side + 1, (1,), generator=generator))
            width = int(torch.randint(min_side, max_side + 1, (1,), generator=generator))
            image = render_shape_image(label, height, width, generator)
            _save_jpeg(image, root / split / SHAPE_CLASSES[label] / f"{n:06d}.jpg", 92)
        counts[split] = total
    return counts
