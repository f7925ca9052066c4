"""Training losses of runs side by side, averaged over windows of iterations.

    python benchmarks/loss_curve.py RUN [RUN ...] [--window 200] [--until 1000]

Reads each run's ``log.csv`` (a Fast R-CNN run, and so the in-context
stage, writes one row per iteration) and prints, per run, the mean of every ``loss_*`` column
over iterations [0, w), [w, 2w), ... A single iteration's loss is a
mini-batch's and noisy; these means are what RESULTS.md compares when it
says one recipe fits its windows faster than another.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def window_means(log: Path, window: int, until: int | None) -> dict[str, list[float]]:
    """``{loss column: [mean over each window of iterations]}`` of one ``log.csv``."""
    with open(log, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{log} has no rows")
    columns = [name for name in rows[0] if name.startswith("loss")]
    if not columns:
        raise ValueError(f"{log} has no loss columns: {list(rows[0])}")
    sums: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for row in rows:
        iteration = int(row["iteration"]) - 1  # log.csv counts from 1
        if until is not None and iteration >= until:
            continue
        slot = iteration // window
        sums.setdefault(slot, [0.0] * len(columns))
        counts[slot] = counts.get(slot, 0) + 1
        for i, name in enumerate(columns):
            sums[slot][i] += float(row[name])
    slots = sorted(sums)
    return {name: [sums[s][i] / counts[s] for s in slots] for i, name in enumerate(columns)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or their log.csv files)")
    parser.add_argument("--window", type=int, default=200, help="iterations per mean")
    parser.add_argument("--until", type=int, default=None, help="ignore iterations from this one on")
    args = parser.parse_args()
    for run in args.runs:
        log = run if run.suffix == ".csv" else run / "log.csv"
        for name, means in window_means(log, args.window, args.until).items():
            print(f"{run}  {name}: " + " ".join(f"{m:.3f}" for m in means))


if __name__ == "__main__":
    main()
