#!/bin/bash
# Session 9 (RESULTS.md "The papers' ablations on the channel-order presets" and
# "Two crop pre-training recipes that did not move the error"), as run on 2026-12-04.
# Usage: OUT=dir bash this-file, after channel-order-2026-12-04.sh with the same OUT
# (it reuses that script's "co" runs: crop trunk -> in-context Fast R-CNN -> SPP-net,
# and R-CNN on the same crop trunks).
set -u
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# 1. The ablation table on the co runs (views of the runs; nothing is retrained).
mkdir -p "$OUT/abl-data"
for s in 0 1 2; do
  ln -sfn "$OUT/data/det-$s" "$OUT/abl-data/data-heldout-$s-300-100"
  # ablations.py finds the in-context Fast R-CNN next to the trunk's classifier run
  ln -sfn "$OUT/detruns/co/set-$s/ctx/work/pretrain-context-fast-rcnn" \
          "$OUT/detruns/co/set-$s/ctx/seed-$s/run/pretrain-context-fast-rcnn"
done
$PY "$HERE/ablations.py" "$OUT/ablations" --seeds 0,1,2 --data-root "$OUT/abl-data" \
    --sppnet-runs "$OUT/detruns/co/set-{seed}/spp" --rcnn-runs "$OUT/rcnnruns/co/set-{seed}"
# 2. SPP-net combined with R-CNN (--combine: NMS over the union of both runs' detections)
for s in 0 1 2; do
  $PY -m sppnet eval detect --run "$OUT/detruns/co/set-$s/spp" --combine "$OUT/rcnnruns/co/set-$s" \
      --data "$OUT/data/det-$s" --split test --json "$OUT/comb-rcnn-$s.json" | tail -1
done
# 3. Crop pre-training screens (held-out test-crop error; set 0): zf5-bn, mixup 0.4
for extra in "--set model.backbone=zf5-bn" "--set train.mixup=0.4"; do
  R=$OUT/cropruns/$(echo "$extra" | tr -dc 'a-z0-9_=.' | head -c 60)
  $PY -m sppnet train classify --config classify-crops-tiny --data "$OUT/crops/set-0" --out "$R" --no-progress \
     --set train.epochs=40 --set "train.lr_steps=[32]" --set train.min_iterations=0 --set train.val_split=null \
     $extra > "$R.log" 2>&1
  $PY -m sppnet eval classify --run "$R" --data "$OUT/crops/set-0" --split test --views center | tail -1
done
