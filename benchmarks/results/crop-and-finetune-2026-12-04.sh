#!/bin/bash
# Session 7 checks (RESULTS.md "Where the held-out errors come from, and six changes that did not move them")
# as run on 2026-12-04.
# Usage: OUT=dir bash this-file     (about 2.5 h on 2 cores; each step skips nothing)
# Held-out sets: benchmarks/heldout_set.py OUT/data/det-S --seed S (300 + 100 images).
set -u
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"

crop_run() {  # crop_run NAME SET [--set ...]: the detectors' crop pre-training (as pretrain.epochs 40 runs it)
  local name=$1 s=$2; shift 2
  local run=$OUT/cropruns/$name/set-$s
  mkdir -p "$(dirname "$run")"
  $PY -m sppnet train classify --config classify-crops-tiny --data "$OUT/crops/set-$s" --out "$run" --no-progress \
     --set train.epochs=40 --set "train.lr_steps=[32]" --set train.min_iterations=0 --set train.val_split=null "$@" > "$run.log" 2>&1
  echo "$name set-$s: $($PY "$HERE/crop_confusion.py" "$run" "$OUT/crops/set-$s" | tail -1)"
}

for s in 0 1 2; do
  $PY "$HERE/heldout_set.py" "$OUT/data/det-$s" --seed $s
  $PY "$HERE/crop_confusion.py" --write "$OUT/data/det-$s" "$OUT/crops/set-$s"
done

# 1. crop pre-training recipes, set 0
crop_run base 0
crop_run width-0.5 0 --set model.width=0.5
crop_run epochs-80 0 --set train.epochs=80 --set "train.lr_steps=[64]"
crop_run colour-jitter-0.2 0 --set train.colour_jitter=0.2

# 2. the in-context trunk (detect-fast-rcnn-tiny) and SPP-net on it, sets 0-2
for s in 0 1 2; do
  [ $s = 0 ] || crop_run base $s
  D=$OUT/data/det-$s; R=$OUT/detruns/base/set-$s
  mkdir -p "$R"
  $PY "$HERE/in_context_trunk.py" "$D" "$OUT/cropruns/base/set-$s" "$R/ctx" --seed $s > "$R.ctx.log" 2>&1
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$R/ctx/seed-$s/run/pretrain" > "$R.spp.log" 2>&1
  $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json"
  $PY -m sppnet eval detect --run "$R/ctx/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json"
  $PY -m sppnet analyze --run "$R/spp" --data "$D" --split test --out "$R/analysis"
done

# 3. SPP-net stage variants on set 0's in-context trunk
for variant in "bg-low-0 --set finetune.bg_low=0.0" "finetune-6000 --set finetune.iterations=6000 --set finetune.lr_steps=[4000]"; do
  set -- $variant; name=$1; shift
  D=$OUT/data/det-0; R=$OUT/sppruns/$name
  mkdir -p "$(dirname "$R")"
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$R" --backbone "$OUT/detruns/base/set-0/ctx/seed-0/run/pretrain" "$@" > "$R.log" 2>&1
  $PY -m sppnet eval detect --run "$R" --data "$D" --split test --json "$R.json"
done

# 4. test NMS, as views of set 0's SPP-net run (benchmarks/ablations.py's view: links to the weights, one test setting changed)
for nms in 0.4 0.5; do
  $PY - "$OUT/detruns/base/set-0/spp" "$OUT/data/det-0" "$OUT/views" "$nms" "$HERE" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[5])
from ablations import view, evaluate
run, data, out, nms = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
result = evaluate(view(run, out / f"nms-{nms}", {"nms": nms}), data, out / "evals", f"nms-{nms}", [])
print(f"test nms {nms}: {100 * result['map']:.1f} mAP")
PYEOF
done

# 5. more distinct images at the same number of steps: set 0 made with 1000 training images
#    (the same 100 test images), crop pre-training 12 epochs (lr step at 10) instead of 40 on 300
$PY "$HERE/heldout_set.py" "$OUT/data/det-0-1000" --train 1000 --test 100 --seed 0
$PY "$HERE/crop_confusion.py" --write "$OUT/data/det-0-1000" "$OUT/crops/set-0-1000"
run=$OUT/cropruns/n1000/set-0
mkdir -p "$(dirname "$run")"
$PY -m sppnet train classify --config classify-crops-tiny --data "$OUT/crops/set-0-1000" --out "$run" --no-progress \
   --set train.epochs=12 --set "train.lr_steps=[10]" --set train.min_iterations=0 --set train.val_split=null > "$run.log" 2>&1
echo "1000 images: $($PY "$HERE/crop_confusion.py" "$run" "$OUT/crops/set-0" | tail -1)"
# ... and with the passes to use them: 40 epochs on the 1000 images
run=$OUT/cropruns/n1000e40/set-0
mkdir -p "$(dirname "$run")"
$PY -m sppnet train classify --config classify-crops-tiny --data "$OUT/crops/set-0-1000" --out "$run" --no-progress \
   --set train.epochs=40 --set "train.lr_steps=[32]" --set train.min_iterations=0 --set train.val_split=null > "$run.log" 2>&1
echo "1000 images, 40 epochs: $($PY "$HERE/crop_confusion.py" "$run" "$OUT/crops/set-0" | tail -1)"
