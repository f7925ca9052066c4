#!/usr/bin/env bash
# Session 33 (issue 14): a detector preset, unchanged, on the held-out detection sets of
# benchmarks/heldout_set.py (300 training and 100 test images, seeds 0-2), as a user's first run
# on data sppnet did not generate: one data folder per run, so each computes its own proposals;
# one run at a time.
#
#   OUT=/tmp/heldout SEEDS="0 1 2" METHODS="sppnet" bash benchmarks/results/heldout-preset-2026-12-07.sh
#
# Writes OUT/METHOD-SEED (the run), OUT/METHOD-SEED.log, OUT/METHOD-SEED.json (VOC07 mAP on the test
# split) and appends "METHOD seed S training: T s" / "METHOD seed S MAP" lines to OUT/time.txt.
# SRC: the source tree the runs use; PY: the Python with sppnet's dependencies.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to a folder for the runs}
SRC=${SRC:-$PWD/src}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
for S in ${SEEDS:-0 1 2}; do
  for M in ${METHODS:-sppnet fast-rcnn rcnn}; do
    DATA=$OUT/data-$S-$M; RUN=$OUT/$M-$S
    [ -d "$DATA" ] || $PY benchmarks/heldout_set.py "$DATA" --seed "$S" > /dev/null
    start=$(date +%s)
    PYTHONPATH=$SRC $PY -m sppnet train detect --method "$M" --data "$DATA" --out "$RUN" > "$RUN.log" 2>&1
    echo "$M seed $S training: $(( $(date +%s) - start )) s" >> "$OUT/time.txt"
    PYTHONPATH=$SRC $PY -m sppnet eval detect --run "$RUN" --data "$DATA" --split test \
      --json "$RUN.json" >> "$RUN.log" 2>&1
    $PY -c "import json; print('$M seed $S', round(100 * json.load(open('$RUN.json'))['map'], 2))" >> "$OUT/time.txt"
  done
done
