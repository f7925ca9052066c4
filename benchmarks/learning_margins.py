"""The margins of the "it learns" tests, over seeds and thread counts.

    python benchmarks/learning_margins.py [--seeds 5] [--threads 1,2] [--out margins.jsonl]

Runs the learning tests (R-CNN, SPP-net, Fast R-CNN detection; SPP
classification) in fresh pytest processes, once per (seed, threads), with
``SPPNET_TEST_SEED`` (data and training seeds, see tests/learning.py) and the
thread count set through SPPNET_TEST_THREADS (tests/conftest.py), then prints
each test's measurements per run and the worst run against the bar the test
asserts. A test's bar must leave room below its worst run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/engine/test_rcnn.py::test_detector_learns_well_above_chance",
    "tests/engine/test_sppnet_detection.py::test_detector_learns_well_above_chance",
    "tests/engine/test_fast_rcnn.py::test_tiny_fast_rcnn_learns_and_reloads",
    "tests/engine/test_classification.py::test_classifier_learns_the_shapes",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-4", help="seeds: a range A-B or a comma-separated list")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=Path("learning-margins.jsonl"))
    parser.add_argument("--append", action="store_true", help="add to --out instead of starting it anew")
    parser.add_argument("--report-only", action="store_true", help="only print the tables of --out")
    parser.add_argument("--tests", default=None, help="comma-separated subset of: " + ", ".join(t.split("/")[-1] for t in TESTS))
    args = parser.parse_args()
    if "-" in args.seeds:
        first, last = (int(v) for v in args.seeds.split("-"))
        seeds = list(range(first, last + 1))
    else:
        seeds = [int(v) for v in args.seeds.split(",")]
    if not (args.append or args.report_only):
        args.out.unlink(missing_ok=True)
    for seed in ([] if args.report_only else seeds):
        for threads in (int(t) for t in args.threads.split(",")):
            env = {**os.environ, "SPPNET_TEST_SEED": str(seed), "SPPNET_MARGINS_LOG": str(args.out.resolve()),
                   "SPPNET_TEST_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
            tests = TESTS if args.tests is None else [t for t in TESTS if t.split("/")[-1] in args.tests.split(",")]
            basetemp = Path(tempfile.gettempdir()) / f"sppnet-margins-seed{seed}-threads{threads}"  # runs may overlap
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                     f"--basetemp={basetemp}", *tests],
                                    cwd=ROOT, env=env, capture_output=True, text=True)
            status = "passed" if result.returncode == 0 else "FAILED"
            print(f"seed {seed}, {threads} thread(s): {status}", flush=True)
            if result.returncode:
                print(result.stdout[-2000:], flush=True)
    runs = defaultdict(list)
    for line in args.out.read_text().splitlines():
        row = json.loads(line)
        runs[row.pop("test")].append(row)
    for test, rows in runs.items():
        print(f"\n{test}")
        keys = [k for k in rows[0] if k not in ("seed", "threads")]
        print("| seed | threads | " + " | ".join(keys) + " |")
        for row in sorted(rows, key=lambda r: (r["seed"], r["threads"])):
            print(f"| {row['seed']} | {row['threads']} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |")
        if "margin" in keys:
            worst = min(rows, key=lambda r: r["margin"])
            print(f"worst margin {worst['margin']:.4f} (seed {worst['seed']}, {worst['threads']} thread(s))")


if __name__ == "__main__":
    main()
