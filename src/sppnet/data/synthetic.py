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

Corrupted detection sets (``DetectionSynthConfig(corrupt=True)``, CLI
``sppnet data synth --task detect --corrupt``): after the clean set is
written, ``corrupt_detection`` puts every kind of fault of ``FAULT_KINDS``
into each split (train and test; trainval shares train's), each fault into an
image of its own, chosen by the seed, and writes ``corruptions.json``::

    {"seed": 0,
     "faults": {"train_000004": "truncated-image", ..., "../outside_train": "unsafe-id"},
     "files":  {"train_000004": "JPEGImages/train_000004.jpg", ...},
     "splits": {"train_000004": "train", ...},
     "clean":  {"train": [ids untouched], "test": [...]},
     "kinds":  {"truncated-image": "what it is", ...}}

``files`` is the file holding the fault (relative to the root; the split
file for the ``SPLIT_FAULTS``). Faults of the ``OBJECT_FAULTS`` kinds add one
bad object to an image's annotation and leave its own objects as they were,
and a duplicate id leaves its image as it was, so a reader that drops the bad
object (the repeated listing) reads exactly the clean image back.

The same seed writes the same files.
"""

from __future__ import annotations

import json
import math
import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sppnet.data.records import BACKGROUND, ImageRecord
from sppnet.data.shapes import SHAPE_CLASSES, background, render_shape_image, shape_mask
from sppnet.atomic import atomic_write_text
from sppnet.data.voc import write_voc_annotation, write_voc_split

__all__ = [
    "DetectionSynthConfig",
    "synthesize_detection",
    "synthesize_classification",
    "corrupt_detection",
    "FAULT_KINDS",
    "IMAGE_FAULTS",
    "OBJECT_FAULTS",
    "MANIFEST",
]

MANIFEST = "corruptions.json"

# Faults that make a whole image unusable, one image each.
IMAGE_FAULTS = {
    "truncated-image": "the JPEG file cut in the middle of its compressed data (the header is intact)",
    "empty-image": "a zero-byte image file",
    "not-an-image": "a text file under the image's .jpg name",
    "decompression-bomb": "the image replaced by a small PNG whose header claims 9000 x 8000 pixels, more than "
                          "images.MAX_PIXELS "
                          "(<filename> names it)",
    "malformed-xml": "the annotation cut in the middle (not well-formed XML)",
    "missing-xml": "the annotation file deleted (the id stays in the split file)",
    "missing-image": "the image file deleted (the id stays in the split file)",
}
# Faults of one object: an extra object is added to the annotation, the
# image's own objects stay as they were.
OBJECT_FAULTS = {
    "unknown-class": "an extra object of class 'unicorn', which the dataset does not have",
    "inverted-box": "an extra object with xmax < xmin",
    "outside-box": "an extra object whose box lies wholly outside the image",
    "zero-area-box": "an extra object whose box has zero width (xmax = xmin - 1 in VOC's inclusive pixels)",
    "nan-box": "an extra object with xmin = nan",
}
# Faults of a split file.
SPLIT_FAULTS = {
    "duplicate-id": "an image's id listed a second time at the end of the split file (the image itself is good)",
    "unsafe-id": "an id '../outside_<split>' appended to the split file (it would leave the dataset root)",
}
FAULT_KINDS = {**IMAGE_FAULTS, **OBJECT_FAULTS, **SPLIT_FAULTS}
# Images a corrupted split needs: one per image or object fault and for the
# duplicate id, two left clean.
_CORRUPT_MIN_IMAGES = len(IMAGE_FAULTS) + len(OBJECT_FAULTS) + 1 + 2


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
    corrupt: bool = False  # inject every kind of fault (FAULT_KINDS) into each split; see corrupt_detection

    def __post_init__(self) -> None:
        if self.train < 0 or self.test < 0 or self.train + self.test == 0:
            raise ValueError(f"need a positive number of images, got train={self.train} test={self.test}")
        if not 32 <= self.min_side <= self.max_side:
            raise ValueError(f"image sides must satisfy 32 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        if self.corrupt:
            for split, total in (("train", self.train), ("test", self.test)):
                if 0 < total < _CORRUPT_MIN_IMAGES:
                    raise ValueError(f"a corrupted set needs at least {_CORRUPT_MIN_IMAGES} images per split (one per "
                                     f"fault kind and 2 clean ones), got {split}={total}")


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
    (and ``trainval`` = train). Returns counts of images and objects (and
    ``corrupted``, the number of faults, with ``config.corrupt``: see
    ``corrupt_detection``)."""
    root = Path(out)
    if (root / MANIFEST).is_file():  # the files it lists are about to be written afresh
        (root / MANIFEST).unlink()
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
    if config.corrupt:
        manifest = corrupt_detection(root, config.seed)
        counts["corrupted"] = len(manifest["faults"])
    return counts


# ============================================================================ corruption


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _truncate_jpeg(data: bytes) -> bytes:
    """The file cut halfway through its compressed data, after the start-of-scan
    header, so that the header still reads and only decoding fails."""
    scan = data.find(b"\xff\xda")
    if scan < 0:
        raise ValueError("not a baseline JPEG file (no start-of-scan marker)")
    return data[: scan + (len(data) - scan) // 2]


def _add_object(xml_path: Path, name: str, box: tuple[str, str, str, str]) -> None:
    tree = ET.parse(xml_path)
    obj = ET.SubElement(tree.getroot(), "object")
    ET.SubElement(obj, "name").text = name
    ET.SubElement(obj, "pose").text = "Unspecified"
    ET.SubElement(obj, "truncated").text = "0"
    ET.SubElement(obj, "difficult").text = "0"
    bndbox = ET.SubElement(obj, "bndbox")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
        ET.SubElement(bndbox, tag).text = value
    ET.indent(tree.getroot())
    atomic_write_text(xml_path, ET.tostring(tree.getroot(), encoding="unicode") + "\n")


def _inject(root: Path, image_id: str, kind: str) -> str:
    """Put fault ``kind`` into image ``image_id``; returns the file holding it
    (relative to ``root``)."""
    xml_path = root / "Annotations" / f"{image_id}.xml"
    image_path = root / "JPEGImages" / f"{image_id}.jpg"
    relative = lambda path: path.relative_to(root).as_posix()  # noqa: E731
    if kind == "truncated-image":
        image_path.write_bytes(_truncate_jpeg(image_path.read_bytes()))
        return relative(image_path)
    if kind == "empty-image":
        image_path.write_bytes(b"")
        return relative(image_path)
    if kind == "not-an-image":
        image_path.write_text("this is not an image, whatever its name says\n", encoding="utf-8")
        return relative(image_path)
    if kind == "decompression-bomb":
        bomb = image_path.with_suffix(".png")
        bomb.write_bytes(_png_bomb(9000, 8000))
        image_path.unlink()
        tree = ET.parse(xml_path)
        tree.getroot().find("filename").text = bomb.name
        atomic_write_text(xml_path, ET.tostring(tree.getroot(), encoding="unicode") + "\n")
        return relative(bomb)
    if kind == "malformed-xml":
        text = xml_path.read_text(encoding="utf-8")
        atomic_write_text(xml_path, text[: len(text) // 2])
        return relative(xml_path)
    if kind == "missing-xml":
        xml_path.unlink()
        return relative(xml_path)
    if kind == "missing-image":
        image_path.unlink()
        return relative(image_path)
    size = ET.parse(xml_path).getroot().find("size")
    width, height = int(size.find("width").text), int(size.find("height").text)
    shape = SHAPE_CLASSES[0]
    # VOC boxes: 1-based inclusive pixels as strings.
    boxes = {
        "unknown-class": ("unicorn", (1, 1, max(2, width // 2), max(2, height // 2))),
        "inverted-box": (shape, (max(2, 3 * width // 4), 1, max(1, width // 4), height)),
        "outside-box": (shape, (width + 10, height + 10, width + 40, height + 40)),
        "zero-area-box": (shape, (11, 11, 10, max(12, height // 2))),
        "nan-box": (shape, ("nan", 1, max(2, width // 2), max(2, height // 2))),
    }
    if kind not in boxes:
        raise ValueError(f"unknown fault kind {kind!r}; choose one of {', '.join(FAULT_KINDS)}")
    name, box = boxes[kind]
    _add_object(xml_path, name, tuple(str(v) for v in box))
    return relative(xml_path)


def corrupt_detection(out: str | Path, seed: int = 0) -> dict:
    """Inject every fault of ``FAULT_KINDS`` into each split of the generated
    VOC-layout set at ``out`` (as ``synthesize_detection`` writes it), each
    into an image of its own, chosen by ``seed``; the other images are left
    untouched. Writes ``out/corruptions.json`` and returns its content (see
    the module docstring).

    Raises ``ValueError`` for a split with fewer than one image per fault
    kind plus two, and for a folder that already holds a manifest (a set is
    corrupted once).
    """
    root = Path(out)
    if (root / MANIFEST).exists():
        raise ValueError(f"{root / MANIFEST} exists: this set has already been corrupted")
    split_dir = root / "ImageSets" / "Main"
    generator = torch.Generator().manual_seed(seed + 7919)  # not the stream that drew the images
    manifest: dict = {"seed": seed, "faults": {}, "files": {}, "splits": {}, "clean": {}, "kinds": dict(FAULT_KINDS)}
    kinds = [*IMAGE_FAULTS, *OBJECT_FAULTS, "duplicate-id"]
    for split in ("train", "test"):
        split_file = split_dir / f"{split}.txt"
        if not split_file.is_file():
            continue
        ids = [line.strip() for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(ids) < _CORRUPT_MIN_IMAGES:
            raise ValueError(f"split {split!r} of {root} has {len(ids)} images; a corrupted set needs at least "
                             f"{_CORRUPT_MIN_IMAGES} (one per fault kind and 2 clean ones)")
        order = torch.randperm(len(ids), generator=generator).tolist()
        chosen = [ids[i] for i in order[: len(kinds)]]
        lists = [split_dir / f"{name}.txt" for name in ((split, "trainval") if split == "train" else (split,))]
        lists = [path for path in lists if path.is_file()]
        appended = ""
        for image_id, kind in zip(chosen, kinds):
            if kind == "duplicate-id":
                appended += f"{image_id}\n"
                manifest["files"][image_id] = split_file.relative_to(root).as_posix()
            else:
                manifest["files"][image_id] = _inject(root, image_id, kind)
            manifest["faults"][image_id] = kind
            manifest["splits"][image_id] = split
        manifest["clean"][split] = [i for i in ids if i not in set(chosen)]
        unsafe = f"../outside_{split}"
        appended += f"{unsafe}\n"
        for path in lists:
            atomic_write_text(path, path.read_text(encoding="utf-8") + appended)
        manifest["faults"][unsafe] = "unsafe-id"
        manifest["files"][unsafe] = split_file.relative_to(root).as_posix()
        manifest["splits"][unsafe] = split
    if not manifest["faults"]:
        raise ValueError(f"{root} has no train or test split file to corrupt")
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


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
