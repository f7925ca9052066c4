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
# measured while the checkout changes; PY the Python with sppnet's dependencies.
# DATASET=heldout (session 33) makes each data folder with benchmarks/heldout_set.py --seed S
# instead (the held-out sets: other objects and backgrounds, 300 + 100 images), a user's first run
# on data sppnet did not generate. SETS (session 35): --set overrides for the training, e.g.
# SETS="finetune.iterations=1500 finetune.lr_steps=[1000]"; NAME then labels the runs (METHOD-NAME-SEED).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to a folder for the runs}
SRC=${SRC:-$PWD/src}
PY=${PY:-.venv/bin/python}
DATASET=${DATASET:-synth}
mkdir -p "$OUT"
SET_ARGS=()
for A in ${SETS:-}; do SET_ARGS+=(--set "$A"); done
LABEL=${NAME:+-$NAME}
for S in ${SEEDS:-0 1 2}; do
  for M in ${METHODS:-sppnet fast-rcnn rcnn}; do
    DATA=$OUT/data-$S-$M; RUN=$OUT/$M$LABEL-$S
    if [ ! -d "$DATA" ] && [ "$DATASET" = heldout ]; then
      $PY benchmarks/heldout_set.py "$DATA" --seed "$S" > /dev/null
    elif [ ! -d "$DATA" ]; then
      PYTHONPATH=$SRC $PY -m sppnet data synth --task detect --out "$DATA" --train 300 --test 100 --seed "$S" > /dev/null
    fi
    start=$(date +%s)
    PYTHONPATH=$SRC $PY -m sppnet train detect --method "$M" --data "$DATA" --out "$RUN" "${SET_ARGS[@]}" > "$RUN.log" 2>&1
    echo "$M$LABEL seed $S training: $(( $(date +%s) - start )) s" >> "$OUT/time.txt"
    PYTHONPATH=$SRC $PY -m sppnet eval detect --run "$RUN" --data "$DATA" --split test \
      --json "$RUN.json" >> "$RUN.log" 2>&1
    $PY -c "import json; print('$M$LABEL seed $S', round(100 * json.load(open('$RUN.json'))['map'], 2))" >> "$OUT/time.txt"
  done
done
