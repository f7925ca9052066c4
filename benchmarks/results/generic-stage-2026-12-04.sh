#!/bin/bash
# Session 11 (RESULTS.md "A generated ImageNet stage"), as run on 2026-12-04/05.
# Usage: OUT=dir bash this-file, after channel-order-2026-12-04.sh with the same OUT
# (its held-out sets OUT/data/det-N, crop folders OUT/crops/set-N and "co" runs, the
# arm compared against). About 1.5 h on 2 cores.
# The "gen10" arm is the "co" arm's pipeline with one change: the crop classifier starts
# from the generic trunk instead of random weights, which is what pretrain.generic_images
# does in the presets (same generated set, same recipe: generic_classify_config).
set -u
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
G=$OUT/generic
# 1. The generic set and trunk (13,200 + 880 images of 44 classes; 10 epochs, ~8 min)
$PY -m sppnet data synth --task pretrain --out "$G/data" --train 13200 --test 880 --seed 0
$PY -m sppnet train classify --config classify-crops-tiny --data "$G/data" --out "$G/run" --no-progress \
   --set train.epochs=10 --set "train.lr_steps=[8]" --set train.warmup_iterations=500 > "$G/run.log" 2>&1
$PY -c "from sppnet.engine.classification import load_classifier; from sppnet.engine.checkpoint import save_weights
m, _, _ = load_classifier('$G/run'); save_weights('$G/trunk.safetensors', m.trunk.state_dict())"
# 2. Per held-out set: crop classifier from the generic trunk, in-context Fast R-CNN, SPP-net, R-CNN
for s in 0 1 2; do
  D=$OUT/data/det-$s; R=$OUT/detruns/gen10/set-$s; CROPS=$OUT/crops/set-$s
  mkdir -p "$R"
  $PY -m sppnet train classify --config classify-crops-tiny --data "$CROPS" --out "$R/crop" --no-progress \
     --set train.epochs=40 --set "train.lr_steps=[32]" --set train.min_iterations=0 --set train.val_split=null \
     --set model.weights="$G/trunk.safetensors" > "$R/crop.log" 2>&1
  $PY -m sppnet eval classify --run "$R/crop" --data "$CROPS" --split test --views center | tail -1
  echo "gen10 set-$s crops: $($PY "$HERE/crop_confusion.py" "$R/crop" "$CROPS" | tail -1)"
  $PY "$HERE/in_context_trunk.py" "$D" "$R/crop" "$R/ctx" --seed $s > "$R/ctx.log" 2>&1
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$R/ctx/seed-$s/run/pretrain" > "$R/spp.log" 2>&1
  $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
  $PY -m sppnet eval detect --run "$R/ctx/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
  $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn" --backbone "$R/crop" > "$R/rcnn.log" 2>&1
  $PY -m sppnet eval detect --run "$R/rcnn" --data "$D" --split test --json "$R/rcnn.json" | tail -1
done
# 3. The papers' ablations on the generic-started runs (views; ablations.py finds the
#    in-context Fast R-CNN next to the trunk's classifier run, so it is linked there)
for s in 0 1 2; do
  ln -sfn "$OUT/detruns/gen10/set-$s/ctx/work/pretrain-context-fast-rcnn" \
          "$OUT/detruns/gen10/set-$s/ctx/seed-$s/run/pretrain-context-fast-rcnn"
done
$PY "$HERE/ablations.py" "$OUT/ablations-generic" --seeds 0,1,2 --data-root "$OUT/abl-data" \
    --sppnet-runs "$OUT/detruns/gen10/set-{seed}/spp" --rcnn-runs "$OUT/detruns/gen10/set-{seed}/rcnn"
mkdir -p "$OUT/set3"
# 4. A fourth held-out set no choice looked at: the SPP-net preset end to end, with and without the generic stage
D=$OUT/data/det-3
[ -d "$D" ] || $PY "$HERE/heldout_set.py" "$D" --seed 3
$PY -m sppnet train detect --method sppnet --data "$D" --out "$OUT/set3/generic" > "$OUT/set3/generic.log" 2>&1
$PY -m sppnet eval detect --run "$OUT/set3/generic" --data "$D" --split test --json "$OUT/set3/generic.json" | tail -1
$PY -m sppnet train detect --method sppnet --data "$D" --out "$OUT/set3/scratch" --set pretrain.generic_images=0 > "$OUT/set3/scratch.log" 2>&1
$PY -m sppnet eval detect --run "$OUT/set3/scratch" --data "$D" --split test --json "$OUT/set3/scratch.json" | tail -1
# 5. Classification (classify-tiny) on the held-out folders OUT/data/cls-N of session 8,
#    starting from the generic trunk; full-image testing
for s in 0 1 2; do
  R=$OUT/clsruns/generic/set-$s; mkdir -p "$(dirname "$R")"
  $PY -m sppnet train classify --config classify-tiny --data "$OUT/data/cls-$s" --out "$R" --no-progress \
     --set model.weights="$G/trunk.safetensors" > "$R.log" 2>&1
  $PY -m sppnet eval classify --run "$R" --data "$OUT/data/cls-$s" --split test --views full | tail -1
done
