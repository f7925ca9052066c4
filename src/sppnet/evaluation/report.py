"""``sppnet eval detect`` as a library call: read a dataset split and a VOC
results folder, evaluate, and write the JSON, the table and the PR plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sppnet.data.records import DetectionDataset
from sppnet.evaluation.coco import evaluate_coco
from sppnet.evaluation.plots import plot_precision_recall
from sppnet.evaluation.results import read_voc_results
from sppnet.evaluation.voc import METRICS, evaluate_detections

__all__ = ["evaluate_results_folder"]

METRIC_CHOICES = (*METRICS, "coco")


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def evaluate_results_folder(
    dataset: DetectionDataset,
    results: str | Path,
    metric: str = "voc07",
    json_out: str | Path | None = None,
    plot_out: str | Path | None = None,
    prefix: str = "comp4",
) -> dict:
    """Evaluate ``RES/<prefix>_det_<split>_<class>.txt`` against ``dataset``.

    Returns ``{"metric", "map", "ap": {class: AP}}`` (plus ``ap50``/``ap75``
    for COCO; classes without positives have AP ``None`` in the JSON) and a
    ``"table"`` string. Writes the JSON to ``json_out`` and, for VOC metrics,
    a precision-recall PNG to ``plot_out``.
    """
    if metric not in METRIC_CHOICES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRIC_CHOICES}")
    per_class = read_voc_results(results, dataset.classes, dataset.split, prefix)
    if metric == "coco":
        summary = evaluate_coco(per_class, dataset)
        lines = [f"{'class':<20s}{'AP@[.5:.95]':>12s}"]
        lines += [f"{name:<20s}{100 * ap:12.1f}" for name, ap in summary["ap"].items()]
        lines.append(f"{'mean':<20s}{100 * summary['map']:12.1f}   AP50 {100 * summary['ap50']:.1f}  AP75 {100 * summary['ap75']:.1f}")
        table = "\n".join(lines)
    else:
        evaluation = evaluate_detections(per_class, dataset, metric)
        summary = evaluation.to_json()
        table = evaluation.table()
        if plot_out is not None:
            plot_precision_recall(evaluation, plot_out)
    summary = _json_safe(summary)
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {**summary, "table": table}
