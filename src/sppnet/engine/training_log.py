"""What training runs leave for people to read: per-step or per-epoch rows in
a CSV file (written atomically, so an interrupted run never leaves half a
table) and a classifier run's curves."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from sppnet.atomic import atomic_write_text

__all__ = ["write_rows_csv", "read_rows_csv", "plot_classifier_curves"]


def write_rows_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """``rows`` (dicts with at least ``fields``) as a CSV table, replacing
    ``path`` atomically. Numbers are written with 10 significant digits, so a
    row read back by ``read_rows_csv`` (as floats) is written again as the
    same text: a resumed run's log equals the uninterrupted one's."""
    text = io.StringIO()
    table = csv.DictWriter(text, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    table.writeheader()
    table.writerows({k: _cell(row[k]) for k in fields} for row in rows)
    atomic_write_text(path, text.getvalue())


def _cell(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, ".10g")
    return value


def read_rows_csv(path: Path, key: str, upto: float) -> list[dict]:
    """The rows of ``path`` whose ``key`` is at most ``upto``, as floats (the
    rows of an earlier run up to the checkpoint it resumes from); none when
    the file does not exist."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle) if float(row[key]) <= upto]


def plot_classifier_curves(rows: list[dict], path: Path) -> None:
    """curves.png of a classifier run: training loss, and top-1 error of the
    training crops and (when measured) the validation centre views, by epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(figure)
    loss_axes, error_axes = figure.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]
    loss_axes.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="loss")
    error_axes.plot(epochs, [r["train_top1_error"] for r in rows], marker="o", label="train (crops)")
    if any(r["val_top1_error"] != "" for r in rows):
        error_axes.plot(epochs, [r["val_top1_error"] if r["val_top1_error"] != "" else math.nan for r in rows],
                        marker="o", label="validation (centre view)")
    error_axes.set(xlabel="epoch", ylabel="top-1 error", title="error", ylim=(0, 1))
    error_axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
