"""Image-folder classification datasets: ``ROOT/<split>/<class>/<image>``.

Images keep their native size (the SPP classifier takes any size). Classes
are the sorted sub-folder names of the split (or a given list, so that test
splits use the training split's labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sppnet.data.records import Skipped

__all__ = ["ClassificationDataset", "read_image_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


@dataclass
class ClassificationDataset:
    root: Path
    split: str
    classes: tuple[str, ...]
    samples: list[tuple[Path, int]]  # (image path, class index)
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


def read_image_folder(root: str | Path, split: str, classes: Sequence[str] | None = None) -> ClassificationDataset:
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_dir}")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = tuple(classes) if classes is not None else tuple(found)
    if not names:
        raise ValueError(f"{split_dir} has no class sub-folders")
    skipped = [Skipped(split_dir / name, "class folder not in the class list; skipped") for name in found if name not in names]
    samples = []
    for label, name in enumerate(names):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((path, label))
            elif path.is_file() and not path.name.startswith("."):
                skipped.append(Skipped(path, f"not an image file type ({', '.join(IMAGE_SUFFIXES)}); skipped"))
    if not samples:
        foreign = [name for name in found if name not in names]
        if foreign:  # e.g. a classifier run evaluated on a folder of other classes
            raise ValueError(f"split {split!r} of {root} has no images of the classes {', '.join(names)}; "
                             f"its class folders are {', '.join(found)}")
        raise ValueError(f"split {split!r} of {root} has no images")
    return ClassificationDataset(root=Path(root), split=split, classes=names, samples=samples, skipped=skipped)
