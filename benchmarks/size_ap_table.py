"""AP by object size over several sets, from ``sppnet analyze`` outputs.

Each argument is ``LABEL=GLOB``: the ``diagnosis.json`` files one detector
wrote on each set (``sppnet analyze --out DIR`` writes ``DIR/diagnosis.json``).
Prints a markdown table, one row per label, of the all-class AP in each size
bin (Hoiem et al.'s bins: XS the smallest 10% of the test objects, S the next
20%, M the middle 40%, L the next 20%, XL the largest 10%), mean +- std over
the files, and the number of files.

    python benchmarks/size_ap_table.py "R-CNN=OUT/seed-*/r-cnn/diagnosis.json" \
        "SPP-net=OUT/seed-*/spp-net-preset/diagnosis.json"
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics

BINS = ("XS", "S", "M", "L", "XL")


def cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} +- {spread:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="+", metavar="LABEL=GLOB")
    args = parser.parse_args()
    print("| | " + " | ".join(BINS) + " | sets |")
    print("|---|" + "---|" * (len(BINS) + 1))
    for row in args.rows:
        label, _, pattern = row.partition("=")
        files = sorted(glob.glob(pattern))
        if not files:
            raise SystemExit(f"{label}: no file matches {pattern}")
        sizes = [json.loads(open(f, encoding="utf-8").read())["overall"]["size_ap"] for f in files]
        cells = [cell([100 * s[b] for s in sizes]) for b in BINS]
        print(f"| {label} | " + " | ".join(cells) + f" | {len(files)} |")


if __name__ == "__main__":
    main()
