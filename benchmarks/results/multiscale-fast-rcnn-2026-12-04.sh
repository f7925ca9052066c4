#!/bin/bash
# Multi-scale training of Fast R-CNN, as run on 2026-12-04 (RESULTS.md "Multi-scale training of Fast R-CNN").
# Usage: DATA_ROOT=dir-with-data-heldout-S-300-100 RUNS=dir-with-seed-S/run/pretrain OUT=dir bash this-file
# (the crop-pretrained trunks are those of the detect-sppnet-tiny runs on the same sets).
set -u
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
sed 's/^train_scales: .*/train_scales: [192, 384, 640]/' "$HERE/../src/sppnet/configs/detect-fast-rcnn-tiny.yaml" > "$OUT/fr-ms.yaml"
for s in 0 1 2; do
  D=$DATA_ROOT/data-heldout-$s-300-100
  $PY "$HERE/in_context_trunk.py" "$D" "$RUNS/seed-$s/run/pretrain" "$OUT/ctx-$s" --preset "$OUT/fr-ms.yaml" --seed $s > "$OUT/ctx-$s.log" 2>&1 || continue
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$OUT/spp-$s" --backbone "$OUT/ctx-$s/seed-$s/run/pretrain" > "$OUT/spp-$s.train.log" 2>&1 || continue
  $PY -m sppnet eval detect --run "$OUT/spp-$s" --data "$D" --split test --json "$OUT/spp-$s.json" > "$OUT/spp-$s.eval.log" 2>&1
  $PY -m sppnet eval detect --run "$OUT/ctx-$s/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$OUT/fr-$s.json" > "$OUT/fr-$s.eval.log" 2>&1
  echo "seed $s: SPP-net $(python3 -c "import json;print(round(100*json.load(open('$OUT/spp-$s.json'))['map'],1))"), Fast R-CNN $(python3 -c "import json;print(round(100*json.load(open('$OUT/fr-$s.json'))['map'],1))")"
done
