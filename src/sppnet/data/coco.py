"""COCO-format detection datasets (one JSON file of images, annotations and
categories, images in a folder).

COCO boxes are [x, y, width, height] in continuous pixels, so xyxy =
(x, y, x + w, y + h) with no other change. Categories are sorted by id;
label i is the i-th category (0 is the background). ``iscrowd`` regions are
kept as ``difficult`` objects, so that evaluation neither rewards nor punishes
detections on them. Degenerate boxes and unknown category or image ids are
reported in ``skipped``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from sppnet.data.records import BACKGROUND, DetectionDataset, ImageRecord, Skipped, leaves_root

__all__ = ["read_coco"]


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise ValueError(f"{path}: a COCO file needs lists 'images', 'annotations' and 'categories'")
    return data


def read_coco(annotation_file: str | Path, image_dir: str | Path, split: str | None = None) -> DetectionDataset:
    """Read a COCO detection JSON; images are ``image_dir / file_name``."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    data = _load_json(annotation_file)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    if not categories:
        raise ValueError(f"{annotation_file}: no categories")
    label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    classes = (BACKGROUND, *(str(c["name"]) for c in categories))
    skipped: list[Skipped] = []
    objects = defaultdict(list)
    images_by_id = {img.get("id"): img for img in data["images"]}
    for index, ann in enumerate(data["annotations"]):
        where = f"annotation {index} (id {ann.get('id')})"
        bbox = ann.get("bbox")
        if ann.get("image_id") not in images_by_id:
            skipped.append(Skipped(annotation_file, f"{where}: unknown image_id {ann.get('image_id')!r}; skipped"))
        elif ann.get("category_id") not in label_of:
            skipped.append(Skipped(annotation_file, f"{where}: unknown category_id {ann.get('category_id')!r}; skipped"))
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            skipped.append(Skipped(annotation_file, f"{where}: bbox must be [x, y, w, h], got {bbox!r}; skipped"))
        elif not (bbox[2] > 0 and bbox[3] > 0) or any(v != v or abs(v) == float("inf") for v in bbox):
            skipped.append(Skipped(annotation_file, f"{where}: empty or invalid box {bbox}; skipped"))
        else:
            objects[ann["image_id"]].append(ann)
    records = []
    for image_id, image in images_by_id.items():
        name = str(image.get("file_name", ""))
        path = image_dir / name
        width, height = int(image.get("width", 0)), int(image.get("height", 0))
        if leaves_root(name) or not path.is_file() or width < 1 or height < 1:
            skipped.append(Skipped(path, f"image {image_id!r}: missing file, unsafe path or no size; skipped"))
            continue
        anns = objects.get(image_id, [])
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        records.append(ImageRecord(
            image_id=str(image_id),
            image_path=path,
            width=width,
            height=height,
            boxes=boxes,
            labels=torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            difficult=torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool),
            truncated=torch.zeros(len(anns), dtype=torch.bool),
        ))
    if not records:
        raise ValueError(f"{annotation_file}: no usable images ({len(skipped)} problems)")
    return DetectionDataset(root=image_dir, split=split or annotation_file.stem, classes=classes, images=records, skipped=skipped)
