#!/usr/bin/env bash
# The numba kernels on 1 and 2 threads, from two source trees side by side, twice, interleaved:
#   BEFORE=/path/to/src-of-7a6f8b3 AFTER=/path/to/src-of-a9aeb30 bash benchmarks/results/numba-builds-2026-12-06.sh
# Each tree keeps its own numba cache (its __pycache__); on a tree's first run the kernels compile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
for round in 1 2; do
  for tree in BEFORE AFTER; do
    echo "== $tree, round $round"
    PYTHONPATH="${!tree}" .venv/bin/python benchmarks/results/numba-builds-2026-12-06.py
  done
done
