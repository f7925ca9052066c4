#!/usr/bin/env bash
# Session 16 (2026-12-05): longer in-context training, and detectors that start
# from the generic classifier with no crop stage, on session 14's three held-out
# sets (benchmarks/heldout_set.py OUT --seed N, 300 + 100 images).
# Usage: DATA=dir-with-det-0..2 RUNS15=session-15-runs OUT=dir bash benchmarks/results/session16-2026-12-05.sh [steps]
# RUNS15/set-N/spp/pretrain is the crop classifier of session 15's SPP-net preset run
# (benchmarks/results/session15-2026-12-05.sh step 1). GEN is the generic classifier
# run the presets start from (made by any tiny detector preset's first run).
set -euo pipefail
PY=${PY:-.venv/bin/python}
GEN=${GEN:-$(dirname "$(ls -d "${SPPNET_CACHE:-$HOME/.cache/sppnet}"/generic-trunks/*/trunk.safetensors | head -1)")/run}
STEPS=${1:-1 2 3 4}
for step in $STEPS; do
  for s in 0 1 2; do
    D="$DATA/det-$s"; R="$OUT/step$step/set-$s"; mkdir -p "$R"
    case $step in
    1|2)  # the in-context Fast R-CNN at 9000 iterations (lr step at 6000) from the crop classifier (1)
          # or from the generic classifier (2); then SPP-net's preset on that trunk; both detectors scored
        START=$([ "$step" = 1 ] && echo "$RUNS15/set-$s/spp/pretrain" || echo "$GEN")
        $PY benchmarks/in_context_trunk.py "$D" "$START" "$R" --iterations 9000 > "$R/ctx.log" 2>&1
        $PY -m sppnet eval detect --run "$R/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
        $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$R/seed-0/run/pretrain" > "$R/spp.log" 2>&1
        $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1 ;;
    3)  # R-CNN fine-tuned from the generic classifier, 3000 iterations (lr step at 2000)
        $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn" --backbone "$GEN" \
          --set finetune.iterations=3000 --set "finetune.lr_steps=[2000]" > "$R/rcnn.log" 2>&1
        $PY -m sppnet eval detect --run "$R/rcnn" --data "$D" --split test --json "$R/rcnn.json" | tail -1 ;;
    4)  # R-CNN fine-tuned from the generic classifier for 1500 iterations (the old length; lr step at 1000)
        $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn" --backbone "$GEN" \
          --set finetune.iterations=1500 --set "finetune.lr_steps=[1000]" > "$R/rcnn.log" 2>&1
        $PY -m sppnet eval detect --run "$R/rcnn" --data "$D" --split test --json "$R/rcnn.json" | tail -1 ;;
    esac
  done
done
