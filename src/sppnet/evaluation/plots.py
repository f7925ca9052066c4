"""Precision-recall plots of a VOC evaluation.

Uses matplotlib's object API with the Agg canvas directly (no ``pyplot``, no
global backend switch, nothing displayed). matplotlib is imported when a plot
is made, so the rest of the package works without it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from sppnet.evaluation.voc import DetectionEvaluation

__all__ = ["plot_precision_recall"]


def plot_precision_recall(evaluation: DetectionEvaluation, path: str | os.PathLike) -> Path:
    """Save one PNG figure with a precision-recall curve per class.

    Args:
        evaluation: the result of
            :func:`~sppnet.evaluation.voc.evaluate_detections`; each class's
            raw cumulative ``recall`` / ``precision`` (``[D]`` each) is drawn
            in ranked order, as the devkit's plot.
        path: output file (parent folders are created); written as PNG.

    Returns:
        ``Path(path)``.

    The legend gives each class's AP in percent and the title the mAP; classes
    without positives (AP NaN) appear in the legend as "n/a" with no curve.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    n = max(len(evaluation.per_class), 1)
    cmap = matplotlib.colormaps["tab20"]
    for i, (label, result) in enumerate(sorted(evaluation.per_class.items())):
        name = evaluation.class_names[label]
        color = cmap(i % 20)
        if math.isnan(result.ap):
            ax.plot([], [], color=color, label=f"{name} (n/a)")
            continue
        ax.plot(result.recall, result.precision, color=color, linewidth=1.2, label=f"{name} ({100 * result.ap:.1f})")
    m = evaluation.map
    ax.set_title(
        f"{evaluation.metric} precision-recall, IoU >= {evaluation.iou_threshold:g}, "
        f"mAP {'n/a' if math.isnan(m) else f'{100 * m:.1f}'}"
    )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small", ncol=2 if n > 10 else 1, title="class (AP %)")
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out
