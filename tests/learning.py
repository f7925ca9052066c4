"""Shared by the "it learns" tests: the seed they train with and where they
report what they measured.

``SPPNET_TEST_SEED`` (default 0) shifts every learning test's data and
training seeds; ``benchmarks/learning_margins.py`` runs those tests over
seeds and thread counts with ``SPPNET_MARGINS_LOG`` set, collects the lines
:func:`record_learning` appends there, and prints the worst run of each test
against its bar. The bars written in the tests come from those tables.
"""

from __future__ import annotations

import json
import os

import torch

LEARNING_SEED = int(os.environ.get("SPPNET_TEST_SEED", "0"))


def record_learning(test: str, **measured: float) -> None:
    """Append one JSON line ``{test, seed, threads, **measured}`` to
    ``$SPPNET_MARGINS_LOG`` (nothing when it is unset)."""
    path = os.environ.get("SPPNET_MARGINS_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": test, "seed": LEARNING_SEED, "threads": torch.get_num_threads(),
                                  **{k: float(v) for k, v in measured.items()}}) + "\n")


def map_and_chance(per_class: dict, dataset) -> tuple[float, float]:
    """VOC07 mAP of ``per_class`` detections on ``dataset`` and of the same
    boxes with their scores shuffled (chance: the ranking carries nothing)."""
    from sppnet.evaluation.voc import Detections, evaluate_detections

    trained = evaluate_detections(per_class, dataset, "voc07").map
    generator = torch.Generator().manual_seed(0)
    shuffled = {k: Detections(d.image_ids, d.scores[torch.randperm(len(d.scores), generator=generator)], d.boxes)
                for k, d in per_class.items()}
    return trained, evaluate_detections(shuffled, dataset, "voc07").map
