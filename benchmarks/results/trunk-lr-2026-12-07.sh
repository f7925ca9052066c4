#!/usr/bin/env bash
# Session 31 (issue 14): classify-tiny on held-out classification folders
# (benchmarks/heldout_set.py --task classify: 400 training and 200 test images of
# star / ring / arrow / crescent, seeds 0-2), with the trunk's lr scaled
# (train.trunk_lr_scale: 1 = the preset, 0 = the generic trunk frozen).
#
#   OUT=/tmp/trunk-lr SEEDS="0 1 2" SCALES="1 0.1 0" bash benchmarks/results/trunk-lr-2026-12-07.sh
#
# Writes OUT/cls-S (the folder), OUT/run-S-SCALE (the run), OUT/run-S-SCALE.log and
# appends one JSON line per run to OUT/results.jsonl: seed, scale, training seconds,
# full-image and multi-view top-1 error on the test split. SRC: the source tree used.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to a folder for the runs}
SRC=${SRC:-$PWD/src}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
for S in ${SEEDS:-0 1 2}; do
  DATA=$OUT/cls-$S
  [ -d "$DATA" ] || $PY benchmarks/heldout_set.py "$DATA" --task classify --seed "$S" > /dev/null
  for X in ${SCALES:-1 0.1 0}; do
    RUN=$OUT/run-$S-$X
    [ -f "$RUN-multi.json" ] && continue  # measured already
    # A folder left by an interrupted run is resumed, not skipped (skipping lost a run once).
    RESUME=$([ -d "$RUN" ] && echo --resume || true)
    start=$(date +%s)
    PYTHONPATH=$SRC $PY -m sppnet train classify --config classify-tiny --data "$DATA" --out "$RUN" \
      --set train.trunk_lr_scale="$X" --no-progress $RESUME ${EXTRA:-} >> "$RUN.log" 2>&1
    seconds=$(( $(date +%s) - start ))
    for V in full multi; do
      PYTHONPATH=$SRC $PY -m sppnet eval classify --run "$RUN" --data "$DATA" --views "$V" --json "$RUN-$V.json" >> "$RUN.log" 2>&1
    done
    $PY -c "import json; f, m = (json.load(open('$RUN-' + v + '.json')) for v in ('full', 'multi')); print(json.dumps({'seed': $S, 'scale': $X, 'seconds': $seconds, 'full': f['top1_error'], 'multi': m['top1_error']}))" >> "$OUT/results.jsonl"
  done
done
