#!/usr/bin/env bash
# Session 15 (2026-12-05): the preset pipelines after the training-speed change
# (channels-last conv activations, oneDNN primitive cache), on the three held-out
# sets of session 14 (benchmarks/heldout_set.py OUT --seed N, 300 + 100 images).
# Usage: DATA=dir-with-det-0..2 OUT=dir bash benchmarks/results/session15-2026-12-05.sh [steps]
set -euo pipefail
PY=${PY:-.venv/bin/python}
STEPS=${1:-1 2}
for step in $STEPS; do
  for s in 0 1 2; do
    D="$DATA/det-$s"; R="$OUT/set-$s"; mkdir -p "$R"
    case $step in
    1)  # SPP-net preset (crop stage, in-context Fast R-CNN, SPP-net stages), timed; both detectors scored
        /usr/bin/time -f "%e s, max RSS %M KB" $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" \
          > "$R/spp.log" 2>&1; tail -1 "$R/spp.log"
        $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
        $PY -m sppnet eval detect --run "$R/spp/pretrain-context-fast-rcnn" --data "$D" --split test \
          --json "$R/fr.json" | tail -1 ;;
    2)  # R-CNN preset on the same set's crop classifier, timed
        /usr/bin/time -f "%e s, max RSS %M KB" $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn" \
          --backbone "$R/spp/pretrain" > "$R/rcnn.log" 2>&1; tail -1 "$R/rcnn.log"
        $PY -m sppnet eval detect --run "$R/rcnn" --data "$D" --split test --json "$R/rcnn.json" | tail -1 ;;
    esac
  done
done
