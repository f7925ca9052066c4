#!/usr/bin/env bash
# Session 29 (issue 14): each detector preset, unchanged, on the generator's own benchmark set
# (`sppnet data synth --task detect`, 300 training and 100 test images) for seeds 0-2, as a user's
# first run: one data folder per run, so each computes its own proposals; one run at a time.
#
#   OUT=/tmp/synth SEEDS="0 1 2" METHODS="sppnet fast-rcnn rcnn" bash benchmarks/results/synth-benchmark-2026-12-07.sh
#
# Writes OUT/METHOD-SEED (the run), OUT/METHOD-SEED.log, OUT/METHOD-SEED.json (VOC07 mAP on the test
# split) and appends "METHOD seed S training: T s" / "METHOD seed S MAP" lines to OUT/time.txt.
# SRC (default: this checkout's src) is the source tree the runs use, so that a snapshot can be
# measured while the checkout changes.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to a folder for the runs}
SRC=${SRC:-$PWD/src}
mkdir -p "$OUT"
for S in ${SEEDS:-0 1 2}; do
  for M in ${METHODS:-sppnet fast-rcnn rcnn}; do
    DATA=$OUT/data-$S-$M; RUN=$OUT/$M-$S
    [ -d "$DATA" ] || PYTHONPATH=$SRC .venv/bin/python -m sppnet data synth --task detect --out "$DATA" \
      --train 300 --test 100 --seed "$S" > /dev/null
    start=$(date +%s)
    PYTHONPATH=$SRC .venv/bin/python -m sppnet train detect --method "$M" --data "$DATA" --out "$RUN" > "$RUN.log" 2>&1
    echo "$M seed $S training: $(( $(date +%s) - start )) s" >> "$OUT/time.txt"
    PYTHONPATH=$SRC .venv/bin/python -m sppnet eval detect --run "$RUN" --data "$DATA" --split test \
      --json "$RUN.json" >> "$RUN.log" 2>&1
    python3 -c "import json; print('$M seed $S', round(100 * json.load(open('$RUN.json'))['map'], 2))" >> "$OUT/time.txt"
  done
done
