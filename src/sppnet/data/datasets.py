"""Open a detection dataset by path, whatever its format.

- a folder with ``Annotations/`` (Pascal VOC layout): the split's ids come
  from ``ImageSets/Main/<split>.txt``; the classes from ``classes`` ("voc", a
  list), else from ``<root>/classes.txt`` when present (generated sets write
  it), else the names found in the split;
- a ``.json`` file (COCO): images are looked up in ``images`` (default: the
  JSON file's folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sppnet.data.coco import read_coco
from sppnet.data.records import DetectionDataset
from sppnet.data.voc import read_voc

__all__ = ["open_detection_dataset", "dataset_root"]


def open_detection_dataset(
    data: str | Path,
    split: str,
    classes: str | Sequence[str] | None = None,
    images: str | Path | None = None,
) -> DetectionDataset:
    data = Path(data)
    if data.suffix.lower() == ".json":
        return read_coco(data, Path(images) if images else data.parent, split)
    if not data.exists():
        raise FileNotFoundError(f"dataset not found: {data}")
    if not (data / "Annotations").is_dir():
        raise ValueError(f"{data} is neither a VOC-layout folder (no Annotations/) nor a COCO .json file")
    if classes is None and (data / "classes.txt").is_file():
        classes = [line.strip() for line in (data / "classes.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    return read_voc(data, split, classes)


def dataset_root(data: str | Path) -> Path:
    """The folder that holds a dataset's caches (proposals, conv5 maps): a VOC
    folder itself, a COCO file's folder."""
    data = Path(data)
    return data if data.is_dir() else data.parent
