#!/usr/bin/env bash
# Session 24 (2026-12-06): R-CNN's preset (detect-rcnn-tiny) trained with one change, as a user
# runs it (`sppnet train detect --method rcnn`, generic stage cached), on the held-out sets
# (benchmarks/heldout_set.py DATA/det-N --seed N), then tested with the preset's test settings.
# The change is the --set arguments after the script's name, e.g.
#   VARIANT=bglow0 ... bash benchmarks/results/session24-2026-12-06.sh --set finetune.bg_low=0.0
# Results: OUT/VARIANT/set-N/rcnn.json (VOC07 mAP, AP per class); training wall time in time.txt.
# Usage: DATA=dir-with-det-0..2 OUT=dir VARIANT=name [SETS='0 1 2'] bash benchmarks/results/session24-2026-12-06.sh [--set K=V ...]
set -euo pipefail
PY=${PY:-$PWD/.venv/bin/python}
for s in ${SETS:-0 1 2}; do
  D="$DATA/det-$s"; R="$OUT/$VARIANT/set-$s"; mkdir -p "$R"
  [ -f "$R/rcnn.json" ] && continue
  start=$(date +%s)
  $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn" "$@" > "$R/rcnn.log" 2>&1
  echo "training: $(( $(date +%s) - start )) s" > "$R/time.txt"
  $PY -m sppnet eval detect --run "$R/rcnn" --data "$D" --split test --json "$R/rcnn.json" > "$R/eval.log" 2>&1
  echo "rcnn $VARIANT set $s: $($PY -c "import json; print(round(100 * json.load(open('$R/rcnn.json'))['map'], 1))")"
done
