"""AP on the objects the image border cuts and on the others, large and all.

``sppnet analyze`` splits AP by object size; on the held-out sets large
objects are also the ones the border cuts (a box that touches it is a cut
object: most of the largest). This separates the two: for each results
folder it gives the VOC mAP over all objects, then over four subsets,
each computed as the size bins are (the objects outside the subset are
marked difficult: neither positives nor false positives when matched):

- ``border`` / ``inside``: boxes within ``--margin`` pixels of the image
  border, and the rest;
- ``large border`` / ``large inside``: the same among the objects of
  ``sppnet analyze``'s L and XL size bins (the largest 30% of each class's
  objects by area, ``size_bin_indices``).

    python benchmarks/border_ap.py DATA --split test "LABEL=RESULTS_DIR" ... [--json OUT.jsonl]

Each ``RESULTS_DIR`` is a VOC results folder (``sppnet eval detect
--results DIR``). Prints one markdown row per folder, mAP and in brackets
the recall of all its detections (mean over classes: the subset's objects
that some detection of the class finds at IoU >= 0.5, however low its
score; a low AP with a high recall is a ranking error, a low recall a
localisation or proposal one); with ``--json`` appends one JSON line per
folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch

from sppnet.data.datasets import open_detection_dataset
from sppnet.data.records import DetectionDataset, ImageRecord
from sppnet.evaluation.diagnosis import SIZE_BINS, size_bin_indices
from sppnet.evaluation.results import read_voc_results
from sppnet.evaluation.voc import evaluate_detections
from sppnet.ops import box_area

SUBSETS = ("all", "border", "inside", "large border", "large inside")


def touches_border(record: ImageRecord, margin: float) -> torch.Tensor:
    """``Tensor[G]`` bool: the boxes within ``margin`` pixels of the border."""
    b = record.boxes
    return (b[:, 0] <= margin) | (b[:, 1] <= margin) | (b[:, 2] >= record.width - margin) | (
        b[:, 3] >= record.height - margin)


def only(dataset: DetectionDataset, keep: Callable[[ImageRecord], torch.Tensor]) -> DetectionDataset:
    """The dataset with every object outside ``keep`` marked difficult."""
    images = [dataclasses.replace(r, difficult=r.difficult | ~keep(r)) for r in dataset.images]
    return dataclasses.replace(dataset, images=images)


def large_objects(dataset: DetectionDataset) -> dict[str, torch.Tensor]:
    """``{image_id: Tensor[G] bool}``: the objects in ``sppnet analyze``'s L
    and XL bins of their class (difficult ones never are)."""
    large = {r.image_id: torch.zeros(r.num_objects, dtype=torch.bool) for r in dataset.images}
    first_large = SIZE_BINS.index("L")
    for label in range(1, len(dataset.classes)):
        members = [(r.image_id, i) for r in dataset.images for i in range(r.num_objects)
                   if int(r.labels[i]) == label and not bool(r.difficult[i])]
        if not members:
            continue
        areas = torch.cat([box_area(r.boxes[(r.labels == label) & ~r.difficult]) for r in dataset.images])
        for (image_id, i), size in zip(members, size_bin_indices(areas.numpy())):
            large[image_id][i] = int(size) >= first_large
    return large


def subsets(dataset: DetectionDataset, margin: float) -> dict[str, DetectionDataset]:
    large = large_objects(dataset)
    return {
        "all": dataset,
        "border": only(dataset, lambda r: touches_border(r, margin)),
        "inside": only(dataset, lambda r: ~touches_border(r, margin)),
        "large border": only(dataset, lambda r: touches_border(r, margin) & large[r.image_id]),
        "large inside": only(dataset, lambda r: ~touches_border(r, margin) & large[r.image_id]),
    }


def final_recall(evaluation) -> float:
    """The recall after all detections, averaged over the classes with objects."""
    values = [float(r.recall[-1]) if r.num_detections else 0.0
              for r in evaluation.per_class.values() if r.num_positives]
    return sum(values) / len(values) if values else float("nan")


def positives(dataset: DetectionDataset) -> int:
    return int(sum(int((~r.difficult).sum()) for r in dataset.images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--margin", type=float, default=2.0, help="pixels from the border that count as touching it")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("results", nargs="+", metavar="LABEL=RESULTS_DIR")
    args = parser.parse_args()
    dataset = open_detection_dataset(args.data, args.split)
    parts = subsets(dataset, args.margin)
    print("| | " + " | ".join(f"{name} ({positives(parts[name])})" for name in SUBSETS) + " |")
    print("|---|" + "---|" * len(SUBSETS))
    for item in args.results:
        label, _, folder = item.partition("=")
        per_class = read_voc_results(folder, dataset.classes, args.split)
        evaluations = {name: evaluate_detections(per_class, part) for name, part in parts.items()}
        maps = {name: e.map for name, e in evaluations.items()}
        recalls = {name: final_recall(e) for name, e in evaluations.items()}
        print(f"| {label} | " + " | ".join(f"{100 * maps[n]:.1f} ({100 * recalls[n]:.0f})" for n in SUBSETS) + " |")
        if args.json is not None:
            with open(args.json, "a", encoding="utf-8") as out:
                out.write(json.dumps({"data": str(args.data), "split": args.split, "label": label, "results": folder,
                                      "margin": args.margin, "map": maps, "recall": recalls}) + "\n")


if __name__ == "__main__":
    main()
