"""Plots of a VOC evaluation: precision-recall curves, and the error
analysis of :mod:`sppnet.evaluation.diagnosis` (false-positive types, AP by
object size, the worst false positives drawn on their images).

Uses matplotlib's object API with the Agg canvas directly (no ``pyplot``, no
global backend switch, nothing displayed). matplotlib is imported when a plot
is made, so the rest of the package works without it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from sppnet.atomic import atomic_replace
from sppnet.data.records import DetectionDataset
from sppnet.evaluation.diagnosis import FP_TYPES, SIZE_BINS, Diagnosis, FPCurve
from sppnet.evaluation.voc import DetectionEvaluation

__all__ = ["draw_false_positives", "plot_false_positive_types", "plot_precision_recall", "plot_size_ap"]


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


# False-positive type colours (FP_TYPES order) and the recall line.
_FP_COLOURS = ("#4363d8", "#f58231", "#3cb44b", "#b0b0b0")
_RECALL_COLOUR = "#e6194b"


def _save_png(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG, atomically (a crash never leaves half a file)."""
    out = Path(path)
    atomic_replace(out, lambda temp: fig.savefig(temp, format="png"), durable=False)
    return out


def _objects(count: int) -> str:
    return f"{count} object" if count == 1 else f"{count} objects"


def _fp_panel(ax, curve: FPCurve, title: str, empty: str) -> None:
    import numpy as np

    ax.set_title(title, fontsize="small")
    ax.set_ylim(0.0, 1.0)
    if len(curve) == 0:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize="small")
        ax.set_xticks([])
        return
    # Steps: the fractions after the k-th false positive hold until the next one.
    x = np.append(curve.num_fp, curve.num_fp[-1] + 1)
    fractions = np.vstack([curve.fractions, curve.fractions[-1:]])
    recall = np.append(curve.recall, curve.recall[-1])
    ax.stackplot(x, fractions.T, colors=_FP_COLOURS, step="post", labels=FP_TYPES)
    ax.plot(x, recall, color=_RECALL_COLOUR, linewidth=1.5, drawstyle="steps-post", label="recall")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(x[0], x[-1])
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5) if x[-1] <= 100 * x[0] else (1,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, alpha=0.3)


def plot_false_positive_types(diagnosis: Diagnosis, path: str | os.PathLike) -> Path:
    """Save the false-positive type plot of Hoiem et al. as one PNG.

    One panel for all classes pooled, then one per class: the fraction of
    each type (Loc, Sim, Oth, BG, stacked) among the top-ranked false
    positives as their number grows (log scale, up to ``max_multiple`` x the
    class's objects), and the recall reached (red line).

    Args:
        diagnosis: the result of
            :func:`~sppnet.evaluation.diagnosis.diagnose_detections`.
        path: output file (parent folders are created).

    Returns:
        ``Path(path)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    total = sum(c.num_positives for c in diagnosis.per_class.values())
    panels = [(diagnosis.overall_curve, f"all classes ({_objects(total)})",
               "no false positives" if total else "no objects")]
    for _, c in sorted(diagnosis.per_class.items()):
        panels.append((c.curve, f"{c.name} ({_objects(c.num_positives)})",
                       "no false positives" if c.num_positives else "no objects"))
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    height = 2.5 * rows + 0.9
    fig = Figure(figsize=(3.2 * columns, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_axis_off()
            continue
        _fp_panel(ax, *panels[i])
        if i % columns == 0:
            ax.set_ylabel("fraction / recall", fontsize="small")
        if i + columns >= len(panels):
            ax.set_xlabel("top false positives", fontsize="small")
        ax.tick_params(labelsize="x-small")
    handles = [Patch(color=colour, label=name) for colour, name in zip(_FP_COLOURS, FP_TYPES)]
    handles.append(Line2D([], [], color=_RECALL_COLOUR, linewidth=1.5, label="recall"))
    groups = "; ".join(",".join(g) for g in diagnosis.config.groups) or "none"
    fig.suptitle(f"false-positive types (similar classes: {groups}), IoU >= {diagnosis.config.iou_threshold:g}",
                 fontsize="medium")
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.35 / height))  # room for the legend and the title
    return _save_png(fig, path)


def plot_size_ap(diagnosis: Diagnosis, path: str | os.PathLike) -> Path:
    """Save a bar chart of AP per object size bin (XS .. XL), per class and
    the mean over classes; dots give the normalised AP. Bins without objects
    have no bar.

    Returns:
        ``Path(path)``.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups = [(c.name, [s.ap for s in c.sizes], [s.normalized_ap for s in c.sizes])
              for _, c in sorted(diagnosis.per_class.items())]
    mean_ap, mean_nap = diagnosis.size_ap, diagnosis.size_normalized_ap
    groups.append(("mean", [mean_ap[b] for b in SIZE_BINS], [mean_nap[b] for b in SIZE_BINS]))
    fig = Figure(figsize=(max(6.0, 0.8 * len(groups) + 1.5), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["viridis"]
    width = 0.8 / len(SIZE_BINS)
    colours = [cmap(b / (len(SIZE_BINS) - 1)) for b in range(len(SIZE_BINS))]
    for b, colour in enumerate(colours):
        xs = [g + (b - (len(SIZE_BINS) - 1) / 2) * width for g in range(len(groups))]
        aps = [values[1][b] for values in groups]
        naps = [values[2][b] for values in groups]
        keep = [i for i, ap in enumerate(aps) if not math.isnan(ap)]
        ax.bar([xs[i] for i in keep], [100 * aps[i] for i in keep], width=width, color=colour)
        keep = [i for i, ap in enumerate(naps) if not math.isnan(ap)]
        ax.plot([xs[i] for i in keep], [100 * naps[i] for i in keep], linestyle="none", marker="o", markersize=3,
                color="black")
    ax.set_xticks(range(len(groups)))
    many = len(groups) > 6
    ax.set_xticklabels([g[0] for g in groups], rotation=45 if many else 0, ha="right" if many else "center")
    ax.set_ylim(0.0, 118.0)  # room for the legend above 100
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(f"{diagnosis.config.metric} AP (%)")
    ax.set_title(f"AP by object size (area percentile bins); dots: normalised AP, N = {diagnosis.normalized_count:.3g}",
                 fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)
    handles = [Patch(color=colour, label=name) for colour, name in zip(colours, SIZE_BINS)]
    handles.append(Line2D([], [], linestyle="none", marker="o", markersize=3, color="black", label="normalised AP"))
    ax.legend(handles=handles, loc="upper left", fontsize="small", ncol=len(handles))
    fig.tight_layout()
    return _save_png(fig, path)


def draw_false_positives(
    diagnosis: Diagnosis,
    dataset: DetectionDataset,
    out_dir: str | os.PathLike,
    top: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Draw each class's worst (highest-scored) false positives on their images.

    Writes ``out_dir/<class>/<nn>_<type>_<image id>.png`` (nn = 01 for the
    highest score): the false positive in red, captioned with its type, class
    and score, and for Loc / Sim / Oth the object that explains it in green,
    captioned with its class and IoU.

    Args:
        diagnosis: the analysis (its ``worst`` false positives per class).
        dataset: the split analysed (for the image files).
        out_dir: output folder.
        top: at most this many per class (default: all of ``worst``).

    Returns:
        (the written paths, a message for each image that could not be read).
    """
    import torch

    from sppnet.data.images import ImageError
    from sppnet.drawing import save_detection_drawing

    records = {record.image_id: record for record in dataset.images}
    names = diagnosis.class_names
    paths: list[Path] = []
    skipped: list[str] = []
    for _, c in sorted(diagnosis.per_class.items()):
        for i, fp in enumerate(c.worst[:top]):
            record = records[fp.image_id]
            captions = [f"{fp.kind}: {c.name} {fp.score:.2f}"]
            boxes = [fp.box]
            if fp.object_box is not None:
                captions.append(f"{names[fp.object_label]} IoU {fp.iou:.2f}")
                boxes.append(fp.object_box)
            safe_id = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in fp.image_id)
            out = Path(out_dir) / c.name / f"{i + 1:02d}_{fp.kind}_{safe_id}.png"
            try:
                paths.append(save_detection_drawing(
                    record.image_path, out, boxes=torch.tensor(boxes, dtype=torch.float32),
                    labels=torch.arange(len(boxes)), classes=captions))
            except (ImageError, OSError) as error:
                skipped.append(f"{c.name} false positive {i + 1} on {fp.image_id}: {error}")
    return paths, skipped
