"""A run's detections on the first N test images, saved, to check that two
versions of the code detect the same (issue 15's before/after equality).

    PYTHONPATH=OLD/src python benchmarks/dump_detections.py old.pt DATA N RUN [RUN ...]
    python benchmarks/dump_detections.py new.pt DATA N RUN [RUN ...]
    python benchmarks/dump_detections.py --compare old.pt new.pt

Each run (any method, ``load_detector``) detects each image with and
without box regression; ``--compare`` prints whether boxes, labels and
scores are bit-identical."""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def dump(out: str, data: Path, count: int, runs: list[str]) -> None:
    from sppnet.data.datasets import open_detection_dataset
    from sppnet.engine.detection_stages import dataset_proposals
    from sppnet.engine.detectors import load_detector

    test = open_detection_dataset(data, "test")
    result = {}
    for run in runs:
        detector = load_detector(run)
        proposals = dataset_proposals(test, detector.proposal_config, data, lambda message: None)
        for record in test.images[:count]:
            for regression in (True, False):
                result[(run, record.image_id, regression)] = detector.detect(record, proposals[record.image_id],
                                                                             regression)
    torch.save(result, out)
    print(f"{len(result)} detection sets saved to {out}")


def compare(first: str, second: str) -> bool:
    a, b = torch.load(first), torch.load(second)
    same = a.keys() == b.keys() and all(torch.equal(a[k][f], b[k][f]) for k in a for f in ("boxes", "labels", "scores"))
    print(f"{len(a)} detection sets, {sum(len(v['scores']) for v in a.values())} detections: "
          f"{'bit-identical' if same else 'DIFFERENT'}")
    return same


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(0 if compare(sys.argv[2], sys.argv[3]) else 1)
    dump(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
