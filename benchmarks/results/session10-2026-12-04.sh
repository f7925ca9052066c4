#!/bin/bash
# Session 10 (RESULTS.md "SPP-net at one scale, and where it trails R-CNN: object
# size" and "A check of the 1000-image runs"), as run on 2026-12-04.
# Usage: OUT=dir bash this-file, after channel-order-2026-12-04.sh and
# session9-2026-12-04.sh with the same OUT (their "co" runs and ablation folder)
# and crop-and-finetune-2026-12-04.sh part 5 (OUT/data/det-0-1000, OUT/crops/set-0-1000,
# OUT/cropruns/n1000*).
set -u
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# 1. One scale at 384, 640 and 1024 (ablations.py reuses the session-9 evaluations), then
#    AP by object size of each row.
$PY "$HERE/ablations.py" "$OUT/ablations" --seeds 0,1,2 --data-root "$OUT/abl-data" \
    --sppnet-runs "$OUT/detruns/co/set-{seed}/spp" --rcnn-runs "$OUT/rcnnruns/co/set-{seed}"
for s in 0 1 2; do
  for row in r-cnn spp-net-preset spp-net-1-scale-384 spp-net-1-scale-640 spp-net-1-scale-1024 \
             spp-net-no-box-regression fast-r-cnn; do
    $PY -m sppnet analyze --data "$OUT/abl-data/data-heldout-$s-300-100" --split test --top-fp 0 \
        --results "$OUT/ablations/seed-$s/evals/results-$row" --out "$OUT/analyze/seed-$s/$row" > /dev/null
  done
done
# 1b. Five test scales (128 added), a view of each run
for s in 0 1 2; do
  V=$OUT/views/s128/set-$s; mkdir -p "$V"
  $PY -c "import sys; sys.path.insert(0, '$HERE'); from ablations import view; from pathlib import Path; \
view(Path('$OUT/detruns/co/set-$s/spp'), Path('$V'), {'scales': [128, 192, 384, 640, 1024]})"
  $PY -m sppnet eval detect --run "$V" --data "$OUT/abl-data/data-heldout-$s-300-100" --split test --json "$V.json"
  $PY -m sppnet analyze --data "$OUT/abl-data/data-heldout-$s-300-100" --split test --run "$V" --top-fp 0 \
      --out "$OUT/analyze/seed-$s/s128" > /dev/null
done
(cd "$OUT/analyze" && $PY "$HERE/size_ap_table.py" "R-CNN=seed-*/r-cnn/diagnosis.json" \
    "SPP-net=seed-*/spp-net-preset/diagnosis.json" "384=seed-*/spp-net-1-scale-384/diagnosis.json" \
    "640=seed-*/spp-net-1-scale-640/diagnosis.json" "1024=seed-*/spp-net-1-scale-1024/diagnosis.json" \
    "no box regression=seed-*/spp-net-no-box-regression/diagnosis.json" "128-1024=seed-*/s128/diagnosis.json" \
    "Fast R-CNN=seed-*/fast-r-cnn/diagnosis.json")
# 2. The SPP-net preset on 1000 training images (47 min here), then every model on the
#    1000-image set's own test split: set 0's test images are its training images 300-399.
D=$OUT/data/det-0-1000; C=$OUT/clean; mkdir -p "$C"
$PY -m sppnet train detect --method sppnet --data "$D" --out "$OUT/det1000/spp" > "$OUT/det1000.log" 2>&1
for pair in "spp-1000 $OUT/det1000/spp" "frcnn-1000 $OUT/det1000/spp/pretrain-context-fast-rcnn" \
            "spp-300 $OUT/detruns/co/set-0/spp" "frcnn-300 $OUT/detruns/co/set-0/ctx/work/pretrain-context-fast-rcnn" \
            "rcnn-300 $OUT/rcnnruns/co/set-0"; do
  set -- $pair
  $PY -m sppnet eval detect --run "$2" --data "$D" --split test --results "$C/results-$1" --json "$C/$1.json" | tail -2
  $PY -m sppnet analyze --data "$D" --split test --results "$C/results-$1" --out "$C/an-$1" --top-fp 0 > /dev/null
done
(cd "$C" && $PY "$HERE/size_ap_table.py" "R-CNN 300=an-rcnn-300/diagnosis.json" "SPP-net 300=an-spp-300/diagnosis.json" \
    "SPP-net 1000=an-spp-1000/diagnosis.json" "Fast R-CNN 300=an-frcnn-300/diagnosis.json" \
    "Fast R-CNN 1000=an-frcnn-1000/diagnosis.json")
# 3. The crop classifiers on the 1000-image set's test crops
for run in "$OUT/cropruns/base/set-0" "$OUT/cropruns/co/set-0" "$OUT/cropruns/n1000/set-0" \
           "$OUT/cropruns/n1000e40/set-0" "$OUT/det1000/spp/pretrain"; do
  echo "$run: $($PY "$HERE/crop_confusion.py" "$run" "$OUT/crops/set-0-1000" | tail -1)"
done
# 4. AP on objects the image border cuts vs the rest (large ones too), with the recall of all detections
for s in 0 1 2; do
  E=$OUT/ablations/seed-$s/evals
  $PY "$HERE/border_ap.py" "$OUT/abl-data/data-heldout-$s-300-100" --json "$OUT/border-ap.jsonl" \
      "R-CNN=$E/results-r-cnn" "SPP-net=$E/results-spp-net-preset" "Fast R-CNN=$E/results-fast-r-cnn" \
      "SPP-net 1 scale 384=$E/results-spp-net-1-scale-384"
done
$PY "$HERE/border_ap.py" "$D" --json "$OUT/border-ap.jsonl" "R-CNN 300=$C/results-rcnn-300" \
    "SPP-net 300=$C/results-spp-300" "SPP-net 1000=$C/results-spp-1000" "Fast R-CNN 300=$C/results-frcnn-300" \
    "Fast R-CNN 1000=$C/results-frcnn-1000"
