"""Pascal VOC devkit layout, read and written.

    ROOT/Annotations/<id>.xml      one XML file per image
    ROOT/JPEGImages/<id>.jpg       the images
    ROOT/ImageSets/Main/<split>.txt   image ids of a split, one per line

VOC boxes are 1-based inclusive pixels (xmin..xmax). They become the package's
0-based continuous boxes once, here: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax,
y2 = ymax (and back when writing). Everything that cannot be used is
reported in ``DetectionDataset.skipped`` with its file. Nothing is dropped
silently:

- the image is skipped (reported with its XML file; the reason names the
  image file where the image is at fault): a missing or malformed (not
  well-formed, or in an unknown encoding) XML file, a missing image file,
  without ``check_images`` a missing or invalid <size>, an image that cannot
  be read:
  empty, not an image, truncated (``check_images``: a JPEG or PNG must end
  with its end marker, any other file is decoded), larger than
  ``images.MAX_PIXELS`` (a decompression bomb); an id in the split file that
  would leave the dataset root (``../x``, reported with the split file) or that
  is no valid file name; the second listing of an id already listed
  (reported with the split file; the first listing is read);
- the object is skipped and the image kept with its other objects: an
  unknown class (or the reserved background name), a missing or non-numeric
  or non-finite coordinate, a difficult/truncated flag that is no number, an
  inverted or zero-area box (or one thinner than float32 can hold), a box
  that lies wholly outside the image;
- the box is clipped to the image, and that is reported: a box that reaches
  partly outside.

A file with faults of several kinds is reported once per fault. The reader
raises only for the split as a whole: ``FileNotFoundError`` (no root or split
file) and ``ValueError`` (an empty split, no usable image, bad ``classes``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from sppnet.atomic import atomic_write_text
from sppnet.data.images import ImageError, checked_image_size
from sppnet.data.records import BACKGROUND, VOC_CLASSES, DetectionDataset, ImageRecord, Skipped, leaves_root

__all__ = ["read_voc", "write_voc_annotation", "write_voc_split", "resolve_classes"]


class _BadFile(ValueError):
    pass


def resolve_classes(classes: str | Sequence[str] | None, found: Sequence[str] = ()) -> tuple[str, ...]:
    """The dataset's class tuple with the background first: ``"voc"`` for the
    20 VOC classes, a sequence of names, or ``None`` for the sorted names
    ``found`` in the data."""
    if classes is None:
        names = sorted(set(found))
    elif isinstance(classes, str):
        if classes.lower() != "voc":
            raise ValueError(f"unknown class preset {classes!r}; use 'voc' or give the class names")
        names = list(VOC_CLASSES)
    else:
        names = [str(name).strip() for name in classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique, repeated: {duplicates}")
    if BACKGROUND in names or "" in names:
        raise ValueError(f"{BACKGROUND!r} and empty names cannot be object classes")
    if not names:
        raise ValueError("no object classes: the data has no objects and no class list was given")
    return (BACKGROUND, *names)


def _safe_child(root: Path, folder: str, name: str, what: str) -> Path:
    """root/folder/name, refusing a ``name`` that would leave the dataset root
    (the error says it of ``what``)."""
    if leaves_root(name):
        raise _BadFile(f"{what} points outside the dataset root")
    return root / folder / name


def _is_file(path: Path, what: str) -> bool:
    """``path.is_file()``, with a path the system refuses (too long, a NUL
    byte) reported as a bad item instead of ending the whole read."""
    try:
        return path.is_file()
    except (OSError, ValueError) as error:
        raise _BadFile(f"cannot look up the {what} {str(path)!r} ({error})") from None


def _read_split(root: Path, split: str) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"split file not found: {split_file}")
    ids = []
    for line in split_file.read_text(encoding="utf-8", errors="replace").splitlines():
        tokens = line.split()
        if tokens:
            ids.append(tokens[0])
    if not ids:
        raise ValueError(f"split {split!r} is empty: {split_file} lists no image ids")
    return ids


def _text(node: ET.Element, tag: str, default: str | None = None) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is None:
            raise _BadFile(f"missing <{tag}>")
        return default
    return child.text.strip()


def _number(node: ET.Element, tag: str) -> float:
    text = _text(node, tag)
    try:
        value = float(text)
    except ValueError:
        raise _BadFile(f"<{tag}> is not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _BadFile(f"<{tag}> is not finite: {text!r}")
    return value


def _flag(node: ET.Element, tag: str) -> bool:
    text = _text(node, tag, "0")
    try:
        return bool(int(float(text)))
    except (ValueError, OverflowError):
        raise _BadFile(f"<{tag}> is not 0 or 1: {text!r}") from None


def _xml_size(xml_root: ET.Element) -> tuple[int, int]:
    """(width, height) from <size>, for a read that does not open the images."""
    size = xml_root.find("size")
    if size is None:
        raise _BadFile("no <size> and the image was not read (check_images=False)")
    width, height = _number(size, "width"), _number(size, "height")
    if not (1 <= width <= 2**31 and 1 <= height <= 2**31):
        raise _BadFile(f"<size> is not a valid image size (width={width:g}, height={height:g}) "
                       "and the image was not read (check_images=False)")
    return int(width), int(height)


def _parse_objects(xml_root: ET.Element, xml_path: Path, width: int, height: int, classes, skipped, found):
    rows, labels, difficult, truncated = [], [], [], []
    for index, obj in enumerate(xml_root.findall("object")):
        where = f"object {index}"
        try:
            name = _text(obj, "name")
            box = obj.find("bndbox")
            if box is None:
                raise _BadFile("missing <bndbox>")
            xmin, ymin, xmax, ymax = (_number(box, tag) for tag in ("xmin", "ymin", "xmax", "ymax"))
            hard, cut = _flag(obj, "difficult"), _flag(obj, "truncated")
        except _BadFile as error:
            skipped.append(Skipped(xml_path, f"{where}: {error}; object skipped"))
            continue
        if name == BACKGROUND:
            skipped.append(Skipped(xml_path, f"{where}: {BACKGROUND!r} is reserved for the background, not an "
                                             "object class; object skipped"))
            continue
        found.add(name)
        if classes is not None and name not in classes:
            skipped.append(Skipped(xml_path, f"{where}: unknown class {name!r}; object skipped"))
            continue
        x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax
        if x2 <= x1 or y2 <= y1:
            skipped.append(Skipped(xml_path, f"{where} ({name}): inverted or empty box "
                                             f"xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}; object skipped"))
            continue
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        if cx2 <= cx1 or cy2 <= cy1:
            skipped.append(Skipped(xml_path, f"{where} ({name}): box lies outside the {width} x {height} image; object skipped"))
            continue
        # The boxes are float32 tensors: a side thinner than float32 can tell
        # apart (e.g. ymax = 1e-300 at ymin = 1) would become an empty box.
        fx1, fy1, fx2, fy2 = (float(np.float32(v)) for v in (cx1, cy1, cx2, cy2))
        if fx2 <= fx1 or fy2 <= fy1:
            skipped.append(Skipped(xml_path, f"{where} ({name}): box is thinner than float32 precision "
                                             f"xmin={xmin!r} ymin={ymin!r} xmax={xmax!r} ymax={ymax!r}; object skipped"))
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            skipped.append(Skipped(xml_path, f"{where} ({name}): box reaches outside the {width} x {height} image; clipped to it"))
        rows.append([fx1, fy1, fx2, fy2])
        labels.append(name)
        difficult.append(hard)
        truncated.append(cut)
    return rows, labels, difficult, truncated


def read_voc(
    root: str | Path,
    split: str,
    classes: str | Sequence[str] | None = None,
    check_images: bool = True,
) -> DetectionDataset:
    """Read split ``split`` of a VOC-layout dataset.

    Args:
        root: the folder holding Annotations/, JPEGImages/, ImageSets/Main/.
        split: a file name in ImageSets/Main without ``.txt``.
        classes: ``"voc"`` (the 20 VOC classes), a sequence of names, or None
            for the sorted names found in this split's annotations.
        check_images: read each image's header (size, readability) and skip
            images that cannot be opened; the XML size is used otherwise.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    ids = _read_split(root, split)
    fixed = None if classes is None else resolve_classes(classes)
    skipped: list[Skipped] = []
    found: set[str] = set()
    parsed = []
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    listed: set[str] = set()
    for image_id in ids:
        if image_id in listed:
            skipped.append(Skipped(split_file, f"image id {image_id!r} is listed more than once; repeat skipped"))
            continue
        listed.add(image_id)
        try:
            xml_path = _safe_child(root, "Annotations", f"{image_id}.xml", f"image id {image_id!r}")
        except _BadFile as error:
            skipped.append(Skipped(split_file, f"{error}; image skipped"))
            continue
        try:
            if not _is_file(xml_path, "annotation file"):
                raise _BadFile("annotation file not found")
            try:
                xml_root = SafeET.parse(xml_path).getroot()
            except (ET.ParseError, DefusedXmlException, ValueError, LookupError) as error:  # LookupError: unknown encoding
                raise _BadFile(f"malformed XML ({error})") from None
            filename = _text(xml_root, "filename", f"{image_id}.jpg")
            try:  # <filename>, else <id>.jpg (a <filename> that is no usable name falls back too)
                image_path = _safe_child(root, "JPEGImages", Path(filename).name, f"<filename> {filename!r}")
                named = _is_file(image_path, "image file named in <filename>")
            except _BadFile:
                named = False
            if not named:
                image_path = _safe_child(root, "JPEGImages", f"{image_id}.jpg", f"image id {image_id!r}")
            if not _is_file(image_path, "image file"):
                raise _BadFile(f"image not found: {image_path}")
            if check_images:
                try:
                    height, width = checked_image_size(image_path)
                except ImageError as error:
                    raise _BadFile(str(error)) from None
            else:
                width, height = _xml_size(xml_root)
        except _BadFile as error:
            skipped.append(Skipped(xml_path, f"{error}; image skipped"))
            continue
        objects = _parse_objects(xml_root, xml_path, width, height, fixed, skipped, found)
        parsed.append((image_id, image_path, width, height, objects))
    class_names = fixed if fixed is not None else resolve_classes(None, found)
    index = {name: i for i, name in enumerate(class_names)}
    images = []
    for image_id, image_path, width, height, (rows, names, difficult, truncated) in parsed:
        images.append(ImageRecord(
            image_id=image_id,
            image_path=image_path,
            width=width,
            height=height,
            boxes=torch.tensor(rows, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor([index[n] for n in names], dtype=torch.int64),
            difficult=torch.tensor(difficult, dtype=torch.bool),
            truncated=torch.tensor(truncated, dtype=torch.bool),
        ))
    if not images:
        details = "; ".join(str(s) for s in skipped[:3])
        raise ValueError(f"split {split!r} of {root} has no usable images ({len(skipped)} problems: {details})")
    return DetectionDataset(root=root, split=split, classes=class_names, images=images, skipped=skipped)


def write_voc_annotation(root: str | Path, record: ImageRecord, classes: Sequence[str], poses: Sequence[str] | None = None) -> Path:
    """Write ``ROOT/Annotations/<id>.xml`` for ``record`` (boxes converted to
    VOC's 1-based inclusive pixels, rounded). Returns the path."""
    root = Path(root)
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = root.name
    ET.SubElement(annotation, "filename").text = record.image_path.name
    size = ET.SubElement(annotation, "size")
    ET.SubElement(size, "width").text = str(record.width)
    ET.SubElement(size, "height").text = str(record.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(annotation, "segmented").text = "0"
    for i in range(record.num_objects):
        x1, y1, x2, y2 = record.boxes[i].tolist()
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = classes[int(record.labels[i])]
        ET.SubElement(obj, "pose").text = poses[i] if poses else "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(record.truncated[i]))
        ET.SubElement(obj, "difficult").text = str(int(record.difficult[i]))
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", round(x1) + 1), ("ymin", round(y1) + 1), ("xmax", round(x2)), ("ymax", round(y2))):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(annotation)
    path = root / "Annotations" / f"{record.image_id}.xml"
    atomic_write_text(path, ET.tostring(annotation, encoding="unicode") + "\n")
    return path


def write_voc_split(root: str | Path, split: str, image_ids: Sequence[str]) -> Path:
    """Write ``ROOT/ImageSets/Main/<split>.txt``."""
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    atomic_write_text(path, "".join(f"{image_id}\n" for image_id in image_ids))
    return path
