#!/bin/bash
# Session 8 (RESULTS.md "Colour-channel order: new colourings of the same objects"), as run on 2026-12-04.
# Usage: OUT=dir bash this-file   (about 1.5 h on 2 cores)
# Both arms run the preset pipeline: crop pre-training (classify-crops-tiny, 40 epochs as
# pretrain.epochs gives it) -> in-context Fast R-CNN (detect-fast-rcnn-tiny) -> SPP-net
# (detect-sppnet-tiny on that trunk). "base" sets channel_order=false in both stages (the
# presets before this session), "co" true (the presets now). The base arm's figures in the
# jsonl are session 7's runs (crop-and-finetune-2026-12-04.sh), the same commands.
set -u
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
for arm in base co; do
  order=$([ $arm = co ] && echo true || echo false)
  for s in 0 1 2; do
    D=$OUT/data/det-$s; R=$OUT/detruns/$arm/set-$s; CROPS=$OUT/crops/set-$s
    [ -d "$D" ] || $PY "$HERE/heldout_set.py" "$D" --seed $s
    [ -d "$CROPS" ] || $PY "$HERE/crop_confusion.py" --write "$D" "$CROPS"
    mkdir -p "$R"
    $PY -m sppnet train classify --config classify-crops-tiny --data "$CROPS" --out "$R/crop" --no-progress \
       --set train.epochs=40 --set "train.lr_steps=[32]" --set train.min_iterations=0 --set train.val_split=null \
       --set train.channel_order=$order > "$R/crop.log" 2>&1
    echo "$arm set-$s crops: $($PY "$HERE/crop_confusion.py" "$R/crop" "$CROPS" | tail -1)"
    $PY -c "import sys, yaml; from sppnet.config import load_config, to_dict; from sppnet.engine.fast_rcnn import FastRCNNConfig
print(yaml.safe_dump(to_dict(load_config(FastRCNNConfig, 'detect-fast-rcnn-tiny', ['train.channel_order=$order']))))" > "$R/context.yaml"
    $PY "$HERE/in_context_trunk.py" "$D" "$R/crop" "$R/ctx" --seed $s --preset "$R/context.yaml" > "$R/ctx.log" 2>&1
    $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$R/ctx/seed-$s/run/pretrain" > "$R/spp.log" 2>&1
    $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
    $PY -m sppnet eval detect --run "$R/ctx/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
  done
done
# Set 0, crop pre-training only (test-crop error): right-angle turns, alone and with channel order
for extra in "--set train.right_angles=true" "--set train.right_angles=true --set train.channel_order=true"; do
  R=$OUT/cropruns/$(echo "$extra" | tr -dc 'a-z_=' | head -c 60)
  $PY -m sppnet train classify --config classify-crops-tiny --data "$OUT/crops/set-0" --out "$R" --no-progress \
     --set train.epochs=40 --set "train.lr_steps=[32]" --set train.min_iterations=0 --set train.val_split=null \
     --set train.channel_order=false $extra > "$R.log" 2>&1
  echo "$extra: $($PY "$HERE/crop_confusion.py" "$R" "$OUT/crops/set-0" | tail -1)"
done
# R-CNN (detect-rcnn-tiny) on the channel-order crop trunks, sets 0-2
for s in 0 1 2; do
  R=$OUT/detruns/co/set-$s
  $PY -m sppnet train detect --method rcnn --data "$OUT/data/det-$s" --out "$R/rcnn" --backbone "$R/crop" > "$R/rcnn.log" 2>&1
  $PY -m sppnet eval detect --run "$R/rcnn" --data "$OUT/data/det-$s" --split test --json "$R/rcnn.json" | tail -1
done
