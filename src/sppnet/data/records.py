"""What every dataset reader produces and every pipeline consumes.

Shapes: G ground-truth objects in one image.

Boxes follow the package convention (DESIGN "Conventions"): ``Tensor[G, 4]``
float32, xyxy, 0-based continuous pixel coordinates of the original image,
width = x2 - x1. File formats with other conventions (VOC's 1-based inclusive
pixels, COCO's xywh) are converted once, in their reader and writer.
Labels index ``classes`` of the dataset, whose entry 0 is the background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["BACKGROUND", "VOC_CLASSES", "ImageRecord", "DetectionDataset", "Skipped", "leaves_root"]

BACKGROUND = "__background__"

# The 20 Pascal VOC object classes, in the devkit's order.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def leaves_root(name: str) -> bool:
    """Whether a file name read from an annotation file would point outside
    the dataset folder it is joined to (absolute, or through ``..``)."""
    path = Path(name)
    return path.is_absolute() or ".." in path.parts or bool(path.drive)


@dataclass
class ImageRecord:
    """One annotated image.

    boxes: ``Tensor[G, 4]`` float32 xyxy, 0-based continuous pixels.
    labels: ``Tensor[G]`` int64 in 1..K (indices into the dataset's classes).
    difficult, truncated: ``Tensor[G]`` bool (VOC flags; COCO's iscrowd is
    read as difficult so that evaluation ignores crowd regions).
    """

    image_id: str
    image_path: Path
    width: int
    height: int
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    difficult: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    truncated: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class Skipped:
    """An item a reader left out, and why (reported, never silent)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class DetectionDataset:
    """A split of a detection dataset: its classes (``classes[0]`` is the
    background) and its images; ``skipped`` lists what could not be read."""

    root: Path
    split: str
    classes: tuple[str, ...]
    images: list[ImageRecord]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Object classes plus the background."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)
