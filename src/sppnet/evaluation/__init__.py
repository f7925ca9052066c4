"""Detection evaluation: VOC AP (devkit rules), the devkit's results folder,
COCO metrics (pycocotools) and precision-recall plots (matplotlib).

Boxes everywhere are 0-based continuous xyxy (DESIGN "Conventions"); the
results-folder reader and writer convert to and from the devkit's 1-based
pixels. ``evaluate_coco`` and ``plot_precision_recall`` import pycocotools and
matplotlib only when called.
"""

from sppnet.evaluation.coco import evaluate_coco
from sppnet.evaluation.plots import plot_precision_recall
from sppnet.evaluation.results import read_voc_results, results_path, write_voc_results
from sppnet.evaluation.voc import (
    METRICS,
    ClassResult,
    DetectionEvaluation,
    Detections,
    detections_from_outputs,
    evaluate_class,
    evaluate_detections,
    voc_ap,
)

__all__ = [
    "METRICS",
    "ClassResult",
    "DetectionEvaluation",
    "Detections",
    "detections_from_outputs",
    "evaluate_class",
    "evaluate_coco",
    "evaluate_detections",
    "plot_precision_recall",
    "read_voc_results",
    "results_path",
    "write_voc_results",
    "voc_ap",
]
