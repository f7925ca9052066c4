#!/bin/bash
# Session 12 (RESULTS.md "The generic stage trained 30 epochs"), as run on 2026-12-05.
# Usage: OUT=dir bash this-file, after generic-stage-2026-12-04.sh with the same OUT (its
# generated set OUT/generic/data, held-out sets OUT/data/det-N and cls-N, crop folders
# OUT/crops/set-N and "gen10" runs, the arm compared against). About 1.5 h on 2 cores.
# The "g30" arm is the "gen10" pipeline with one change: the generic trunk is trained for
# 30 epochs (lr step at 24) instead of 10 (step at 8), which is what generic_epochs: 30 does
# in the presets (same generated set, same recipe otherwise: generic_classify_config).
set -u
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
G=$OUT/generic30
# 1. The generic trunk, 30 epochs (~17 min on 2 cores)
$PY -m sppnet train classify --config classify-crops-tiny --data "$OUT/generic/data" --out "$G/run" --no-progress \
   --set train.epochs=30 --set "train.lr_steps=[24]" --set train.min_iterations=0 --set train.warmup_iterations=500 \
   --set train.val_split=test > "$G/run.log" 2>&1
$PY -c "from sppnet.engine.classification import load_classifier; from sppnet.engine.checkpoint import save_weights
m, _, _ = load_classifier('$G/run'); save_weights('$G/trunk.safetensors', m.trunk.state_dict())"
# 2. Per held-out set: crop classifier from that trunk, in-context Fast R-CNN, SPP-net, R-CNN,
#    and the crop classifier's transfer to pooled windows
for s in 0 1 2; do
  D=$OUT/data/det-$s; R=$OUT/detruns/g30/set-$s; CROPS=$OUT/crops/set-$s
  mkdir -p "$R"
  $PY -m sppnet train classify --config classify-crops-tiny --data "$CROPS" --out "$R/crop" --no-progress \
     --set train.epochs=40 --set "train.lr_steps=[32]" --set train.min_iterations=0 --set train.val_split=null \
     --set model.weights="$G/trunk.safetensors" > "$R/crop.log" 2>&1
  $PY -m sppnet eval classify --run "$R/crop" --data "$CROPS" --split test --views center | tail -1
  echo "g30 set-$s crops: $($PY "$HERE/crop_confusion.py" "$R/crop" "$CROPS" | tail -1)"
  $PY "$HERE/in_context_trunk.py" "$D" "$R/crop" "$R/ctx" --seed $s > "$R/ctx.log" 2>&1
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$R/ctx/seed-$s/run/pretrain" > "$R/spp.log" 2>&1
  $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
  $PY -m sppnet eval detect --run "$R/ctx/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
  $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn" --backbone "$R/crop" > "$R/rcnn.log" 2>&1
  $PY -m sppnet eval detect --run "$R/rcnn" --data "$D" --split test --json "$R/rcnn.json" | tail -1
  mkdir -p "$R/transfer" && ln -sfn "$R/crop" "$R/transfer/pretrain"
  $PY "$HERE/window_transfer.py" "$R/transfer" "$D" | tail -2
  # the same on the 10-epoch arm's crop classifier (RESULTS.md's row to compare with)
  T=$OUT/detruns/gen10/set-$s/transfer; mkdir -p "$T" && ln -sfn "$OUT/detruns/gen10/set-$s/crop" "$T/pretrain"
  $PY "$HERE/window_transfer.py" "$T" "$D" | tail -2
done
# 3. Classification (classify-tiny) on the held-out folders, starting from that trunk; full-image testing
for s in 0 1 2; do
  R=$OUT/clsruns/g30/set-$s; mkdir -p "$(dirname "$R")"
  $PY -m sppnet train classify --config classify-tiny --data "$OUT/data/cls-$s" --out "$R" --no-progress \
     --set model.weights="$G/trunk.safetensors" > "$R.log" 2>&1
  $PY -m sppnet eval classify --run "$R" --data "$OUT/data/cls-$s" --split test --views full | tail -1
done
