#!/usr/bin/env bash
# Session 32 (issue 14): classify-tiny with one change (--set ...) on held-out
# classification folders (benchmarks/heldout_set.py --task classify: 400 training
# and 200 test images of star / ring / arrow / crescent, seeds 0-2).
#
#   OUT=/tmp/cls NAME=mixup SETS="train.mixup=0.4" SEEDS="0 1 2" bash benchmarks/results/classify-heldout-2026-12-07.sh
#
# NAME labels the variant (SETS empty: the preset as it is). Writes OUT/cls-S (the
# folder, made once), OUT/run-S-NAME (the run) and its .log, and appends one JSON
# line per run to OUT/results.jsonl: seed, name, sets, training seconds, full-image
# and multi-view top-1 error on the test split. A run with results is skipped; a
# folder left by an interrupted run is resumed. SRC: the source tree used.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to a folder for the runs}
NAME=${NAME:?set NAME to label the variant}
SRC=${SRC:-$PWD/src}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
SET_ARGS=()
for A in ${SETS:-}; do SET_ARGS+=(--set "$A"); done
for S in ${SEEDS:-0 1 2}; do
  DATA=$OUT/cls-$S
  [ -d "$DATA" ] || $PY benchmarks/heldout_set.py "$DATA" --task classify --seed "$S" > /dev/null
  RUN=$OUT/run-$S-$NAME
  [ -f "$RUN-multi.json" ] && continue
  RESUME=$([ -d "$RUN" ] && echo --resume || true)
  start=$(date +%s)
  PYTHONPATH=$SRC $PY -m sppnet train classify --config classify-tiny --data "$DATA" --out "$RUN" \
    "${SET_ARGS[@]}" --no-progress $RESUME >> "$RUN.log" 2>&1
  seconds=$(( $(date +%s) - start ))
  for V in full multi; do
    PYTHONPATH=$SRC $PY -m sppnet eval classify --run "$RUN" --data "$DATA" --views "$V" --json "$RUN-$V.json" >> "$RUN.log" 2>&1
  done
  $PY -c "import json, sys; f, m = (json.load(open('$RUN-' + v + '.json')) for v in ('full', 'multi')); print(json.dumps({'seed': $S, 'name': '$NAME', 'sets': sys.argv[1], 'seconds': $seconds, 'full': f['top1_error'], 'multi': m['top1_error']}))" "${SETS:-}" >> "$OUT/results.jsonl"
done
