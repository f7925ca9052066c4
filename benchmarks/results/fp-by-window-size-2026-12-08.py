"""Session 39 (issue 14): where a detector's top-ranked false positives lie, by window size, and
whether its background ones sit on plain background or inside an object.

`sppnet analyze` counts, per class, the top-ranked false positives (as many as the class's objects)
by Hoiem et al.'s types. Its BG type (IoU under 0.1 with every object) also takes in a small window
wholly inside a large object. This prints, pooled over the classes:

- those false positives, and the BG ones among them, by window side (sqrt of the area), beside the
  test objects (not difficult) in the same bins;
- how many BG ones have at least 70% of their area inside one object ("inside an object": a part
  of it scored as the whole), and how many hold at least 70% of an object's area ("holding an
  object": a window far larger than the object it holds), per class.

    PYTHONPATH=src python benchmarks/results/fp-by-window-size-2026-12-08.py RUN DATA [SPLIT]

RUN is a detector run that `sppnet eval detect --run RUN --data DATA --split SPLIT` has scored
(it reads RUN/results-SPLIT).
"""

import sys

import numpy as np

from sppnet.data.datasets import open_detection_dataset
from sppnet.evaluation.diagnosis import DiagnosisConfig, diagnose_detections
from sppnet.evaluation.results import read_voc_results

SIDE_BINS = (0, 24, 32, 48, 64, 96, 100_000)
INSIDE = 0.7


def side(box) -> float:
    return float(np.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)))


def main(run: str, data: str, split: str = "test") -> None:
    dataset = open_detection_dataset(data, split)
    per_class = read_voc_results(f"{run}/results-{split}", dataset.classes, dataset.split, "comp4")
    diagnosis = diagnose_detections(per_class, dataset, DiagnosisConfig(top_fp=1_000_000))
    objects = {image.image_id: image.boxes.double().numpy().reshape(-1, 4) for image in dataset.images}
    top_hist = np.zeros(len(SIDE_BINS) - 1, int)
    bg_hist = np.zeros(len(SIDE_BINS) - 1, int)
    inside_total = contains_total = bg_total = 0
    for result in diagnosis.per_class.values():
        top = result.worst[: result.num_positives]
        inside = contains = 0
        for fp in top:
            b = int(np.searchsorted(SIDE_BINS, side(fp.box), side="right")) - 1
            top_hist[b] += 1
            if fp.kind != "BG":
                continue
            bg_hist[b] += 1
            gt = objects[fp.image_id]
            if len(gt):
                x1, y1, x2, y2 = fp.box
                iw = np.clip(np.minimum(x2, gt[:, 2]) - np.maximum(x1, gt[:, 0]), 0, None)
                ih = np.clip(np.minimum(y2, gt[:, 3]) - np.maximum(y1, gt[:, 1]), 0, None)
                inter = iw * ih
                inside += int((inter / max(side(fp.box) ** 2, 1e-6)).max() >= INSIDE)
                gt_area = np.maximum((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]), 1e-6)
                contains += int((inter / gt_area).max() >= INSIDE)
        bg = sum(fp.kind == "BG" for fp in top)
        print(f"{result.name:10s} top {len(top):4d} false positives: BG {bg:4d}, inside an object {inside:3d}, "
              f"holding an object {contains:3d}")
        inside_total += inside
        contains_total += contains
        bg_total += bg
    print(f"{'all':10s} BG {bg_total}, inside an object {inside_total} ({100 * inside_total / max(bg_total, 1):.0f}%), "
          f"holding an object {contains_total} ({100 * contains_total / max(bg_total, 1):.0f}%)")
    sides = [side(box) for image in dataset.images
             for box, hard in zip(image.boxes.tolist(), image.difficult.tolist()) if not hard]
    object_hist = np.histogram(sides, SIDE_BINS)[0]
    print("window side (px)       " + " ".join(f"{lo:>4d}-{'' if hi >= 100_000 else hi:<4}"
                                           for lo, hi in zip(SIDE_BINS[:-1], SIDE_BINS[1:])))
    print("top false positives    " + " ".join(f"{v:9d}" for v in top_hist))
    print("  of which BG          " + " ".join(f"{v:9d}" for v in bg_hist))
    print("objects, not difficult " + " ".join(f"{v:9d}" for v in object_hist))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
