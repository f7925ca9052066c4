"""The VOC devkit's results folder: one text file of detections per class.

File ``<out_dir>/<prefix>_det_<split>_<class>.txt`` (prefix ``comp4``: trained
on outside data allowed, as the devkit's competition 4), one line per
detection::

    <image id> <score> <x1> <y1> <x2> <y2>

in the devkit's 1-based inclusive pixel coordinates. The package's boxes are
0-based continuous (DESIGN "Conventions"), so the writer outputs
``(x1 + 1, y1 + 1, x2, y2)`` and the reader converts back with
``(X1 - 1, Y1 - 1, X2, Y2)``, the same conversion as the annotation reader.
Scores are written with ``%.6f`` and coordinates with ``%.1f``.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from sppnet.atomic import atomic_replace
from sppnet.data.records import BACKGROUND
from sppnet.evaluation.voc import Detections

__all__ = ["read_voc_results", "results_path", "write_voc_results"]


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    classes = tuple(classes)
    if len(classes) < 2 or classes[0] != BACKGROUND:
        raise ValueError(
            f"classes must be the dataset's classes with {BACKGROUND!r} first and at least one object class, "
            f"got {classes[:3]!r}{'...' if len(classes) > 3 else ''}"
        )
    for name in classes[1:]:
        if not name or any(c.isspace() or c in "/\\" for c in name):
            raise ValueError(f"class name {name!r} cannot be used in a results file name")
    return classes


def _check_part(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() or c in "/\\" for c in value):
        raise ValueError(f"{what} must be a non-empty string without spaces or slashes, got {value!r}")
    return value


def results_path(out_dir: str | os.PathLike, prefix: str, split: str, class_name: str) -> Path:
    """``out_dir / f"{prefix}_det_{split}_{class_name}.txt"``."""
    return Path(out_dir) / f"{prefix}_det_{split}_{class_name}.txt"


def write_voc_results(
    per_class: Mapping[int, Detections],
    classes: Sequence[str],
    split: str,
    out_dir: str | os.PathLike,
    prefix: str = "comp4",
) -> list[Path]:
    """Write detections in the devkit's results format, one file per class.

    Args:
        per_class: ``{label: Detections}``, labels in 1..K; boxes 0-based
            continuous xyxy. A missing label gets an empty file (the devkit
            expects a file for every class).
        classes: the dataset's classes, ``classes[0] == "__background__"``.
        split: the image set, e.g. ``"test"`` (part of the file names).
        out_dir: folder to write to (created if needed).
        prefix: file name prefix, ``"comp4"`` by default.

    Returns:
        The K written paths, in label order. Each file is written to a
        temporary file in ``out_dir`` and moved into place with
        ``os.replace``, so a reader never sees a half-written file.

    Raises:
        ValueError: a label outside 1..K, or an image id containing whitespace
            (it would break the line format).
    """
    classes = _check_classes(classes)
    _check_part(split, "split")
    _check_part(prefix, "prefix")
    for k in per_class:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < len(classes):
            raise ValueError(f"per_class keys must be labels in 1..{len(classes) - 1}, got {k!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(1, len(classes)):
        dets = per_class.get(k, Detections.empty())
        for image_id in dets.image_ids:
            if not image_id or any(c.isspace() for c in image_id):
                raise ValueError(f"image id {image_id!r} (class {classes[k]!r}) is empty or contains whitespace")
        path = results_path(out, prefix, split, classes[k])
        atomic_replace(path, lambda temp, dets=dets: _write_lines(temp, dets))
        paths.append(path)
    return paths


# Detections formatted per write: the text of a whole class is never built at once.
_WRITE_BLOCK = 4096


def _write_lines(temp: str, dets: Detections) -> None:
    with open(temp, "w", encoding="utf-8") as out:
        for start in range(0, len(dets), _WRITE_BLOCK):
            end = start + _WRITE_BLOCK
            boxes = dets.boxes[start:end].to(torch.float64).clone()
            boxes[:, :2] += 1.0  # 0-based continuous -> 1-based inclusive (x2, y2 unchanged)
            out.writelines(
                f"{image_id} {score:.6f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}\n"
                for image_id, score, (x1, y1, x2, y2) in zip(
                    dets.image_ids[start:end], dets.scores[start:end].to(torch.float64).tolist(), boxes.tolist()
                )
            )


def _parse_file(path: Path) -> Detections:
    # Compact while reading: 8 bytes per number (not a Python float each) and
    # one string per image id (not one per line).
    ids: list[str] = []
    known: dict[str, str] = {}
    scores = array("d")
    boxes = array("d")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise ValueError(
                    f"{path}:{number}: expected '<image id> <score> <x1> <y1> <x2> <y2>' (6 fields), "
                    f"got {len(fields)}: {line.rstrip()!r}"
                )
            try:
                values = [float(v) for v in fields[1:]]
            except ValueError:
                raise ValueError(f"{path}:{number}: score and coordinates must be numbers: {line.rstrip()!r}") from None
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{path}:{number}: NaN or infinite value: {line.rstrip()!r}")
            score, x1, y1, x2, y2 = values
            box = [x1 - 1.0, y1 - 1.0, x2, y2]  # 1-based inclusive -> 0-based continuous
            if box[2] < box[0] or box[3] < box[1]:
                raise ValueError(
                    f"{path}:{number}: box has x2 < x1 - 1 or y2 < y1 - 1 (expected 1-based xyxy): {line.rstrip()!r}"
                )
            ids.append(known.setdefault(fields[0], fields[0]))
            scores.append(score)
            boxes.extend(box)
    if not ids:
        return Detections.empty()
    return Detections(ids, torch.from_numpy(np.frombuffer(scores, dtype=np.float64)),
                      torch.from_numpy(np.frombuffer(boxes, dtype=np.float64)).reshape(-1, 4))


def read_voc_results(
    results_dir: str | os.PathLike,
    classes: Sequence[str],
    split: str,
    prefix: str = "comp4",
) -> dict[int, Detections]:
    """Read a devkit results folder written by :func:`write_voc_results` (or
    by the devkit / py-faster-rcnn, same format).

    Args:
        results_dir: the folder holding ``<prefix>_det_<split>_<class>.txt``.
        classes: the dataset's classes, ``classes[0] == "__background__"``.
        split: the image set in the file names.
        prefix: file name prefix, ``"comp4"`` by default.

    Returns:
        ``{label: Detections}`` for labels 1..K: float64 scores ``[D]`` and
        boxes ``[D, 4]`` converted to 0-based continuous xyxy. A class whose
        file is missing has no detections.

    Raises:
        FileNotFoundError: no class file exists at all (the folder and the
            expected file name pattern are named).
        ValueError: a malformed line, a non-finite number or an inverted box
            (``file:line`` is named).
    """
    classes = _check_classes(classes)
    _check_part(split, "split")
    _check_part(prefix, "prefix")
    folder = Path(results_dir)
    result: dict[int, Detections] = {}
    found = 0
    for k in range(1, len(classes)):
        path = results_path(folder, prefix, split, classes[k])
        if path.is_file():
            found += 1
            result[k] = _parse_file(path)
        else:
            result[k] = Detections.empty()
    if not found:
        raise FileNotFoundError(
            f"no VOC results files in {folder} (expected {prefix}_det_{split}_<class>.txt for the classes "
            f"{', '.join(classes[1:4])}{', ...' if len(classes) > 4 else ''})"
        )
    return result
