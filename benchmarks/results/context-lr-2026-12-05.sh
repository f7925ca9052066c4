#!/bin/bash
# Session 13 (RESULTS.md "The in-context stage's learning rate"), as run on 2026-12-05.
# Usage: OUT=dir bash this-file, after generic-30-2026-12-05.sh with the same OUT (its
# held-out sets OUT/data/det-N, and the crop classifiers OUT/detruns/{gen10,g30}/set-N/crop
# of the 10- and 30-epoch generic trunks). ARMS (default "g30 gen10") and LRS (default
# "0.005") choose the full runs. About 30 min per arm and lr on 2 cores.
set -u
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# 1. Probes: the in-context Fast R-CNN's first 1000 iterations at one constant lr, set 0,
#    from each arm's crop classifier; the mean losses per 200 iterations (loss_curve.py).
#    (The lr 0.01 rows are the first 1000 iterations of the preset runs, whose lr is
#    constant until iteration 3000. On 2026-12-05 lr 0.02 was run on the g30 arm only.)
for variant in "lr0.0025:train.lr=0.0025" "lr0.005:train.lr=0.005" "lr0.02:train.lr=0.02" \
               "frozen5:train.frozen_convs=5"; do
  name=${variant%%:*}; setting=${variant#*:}
  for a in g30 gen10; do
    P=$OUT/probes/$name-$a
    $PY "$HERE/in_context_trunk.py" "$OUT/data/det-0" "$OUT/detruns/$a/set-0/crop" "$P" \
       --set "$setting" --set train.iterations=1000 --set "train.lr_steps=[999]" > "$P.log" 2>&1
    $PY "$HERE/loss_curve.py" "$P/work/pretrain-context-fast-rcnn" --until 1000
  done
done
# 2. Full runs: the preset's in-context stage (4500 iterations, step at 3000) at lr LR instead
#    of 0.01, SPP-net (its preset) on that trunk, both scored on the test split.
for a in ${ARMS:-g30 gen10}; do
  for lr in ${LRS:-0.005}; do
    for s in 0 1 2; do
      D=$OUT/data/det-$s; R=$OUT/detruns/$a-lr$lr/set-$s
      mkdir -p "$R"
      $PY "$HERE/in_context_trunk.py" "$D" "$OUT/detruns/$a/set-$s/crop" "$R/ctx" --seed $s \
         --set train.lr=$lr > "$R/ctx.log" 2>&1
      $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$R/ctx/seed-$s/run/pretrain" > "$R/spp.log" 2>&1
      $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
      $PY -m sppnet eval detect --run "$R/ctx/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
      $PY "$HERE/loss_curve.py" "$R/ctx/work/pretrain-context-fast-rcnn" --window 500
    done
  done
done
# 3. Where the Fast R-CNN runs differ: `sppnet analyze` on each arm's in-context stage
#    (gen10 and g30 are session 12's lr-0.01 runs)
for a in gen10 g30 g30-lr0.005 gen10-lr0.005; do
  for s in 0 1 2; do
    $PY -m sppnet analyze --data "$OUT/data/det-$s" --split test --top-fp 0 \
       --run "$OUT/detruns/$a/set-$s/ctx/work/pretrain-context-fast-rcnn" --out "$OUT/analysis/fr-$a-$s" | grep "^all\|^arrow"
  done
done
# 4. SPP-net with no in-context stage: its preset on the crop classifier itself
for a in g30 gen10; do
  for s in 0 1 2; do
    D=$OUT/data/det-$s; R=$OUT/detruns/$a-noctx/set-$s; mkdir -p "$R"
    $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$OUT/detruns/$a/set-$s/crop" > "$R.log" 2>&1
    $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
  done
done
# 5. The two arms' activation scales (conv5 RMS, SPP vector length, weight norms)
for s in 0 1 2; do
  $PY "$HERE/activation_scale.py" "$OUT/data/det-$s" "$OUT/detruns/gen10/set-$s/crop" "$OUT/detruns/g30/set-$s/crop"
done
# 6. R-CNN on a fourth held-out set (heldout_set.py det-3 --seed 3): the preset with the
#    30-epoch generic trunk, as a user runs it (empty generic cache), against the same
#    preset on the crop classifier of the 10-epoch pipeline (session 11's SPP-net run on
#    det-3, OUT/e2e/gen, made by `sppnet train detect --method sppnet` with the preset).
#    Run with the preset file itself at generic_epochs: 30 (commit 6b23410); --set is the same setting.
D=$OUT/data/det-3; mkdir -p "$OUT/det3"
$PY -m sppnet train detect --method rcnn --data "$D" --out "$OUT/det3/rcnn10" --backbone "$OUT/e2e/gen/pretrain" > "$OUT/det3/rcnn10.log" 2>&1
$PY -m sppnet eval detect --run "$OUT/det3/rcnn10" --data "$D" --split test --json "$OUT/det3/rcnn10.json" | tail -1
SPPNET_CACHE=$OUT/det3/cache $PY -m sppnet train detect --method rcnn --data "$D" --out "$OUT/det3/rcnn30" \
   --set pretrain.generic_epochs=30 > "$OUT/det3/rcnn30.log" 2>&1
$PY -m sppnet eval detect --run "$OUT/det3/rcnn30" --data "$D" --split test --json "$OUT/det3/rcnn30.json" | tail -1
# 7. Per-class transfer of the crop classifiers to pooled windows (before any in-context stage)
for s in 0 1 2; do
  for a in gen10 g30; do
    $PY "$HERE/window_transfer.py" "$OUT/detruns/$a/set-$s/crop" "$OUT/data/det-$s" | tail -3
  done
done
# 8. The in-context stage from the 30-epoch crop classifier with conv1-conv3 frozen (the preset
#    freezes conv1): does fine-tuning the lower convs on 300 images lose the arrows?
for s in 0 1 2; do
  D=$OUT/data/det-$s; R=$OUT/detruns/g30-frozen3/set-$s; mkdir -p "$R"
  $PY "$HERE/in_context_trunk.py" "$D" "$OUT/detruns/g30/set-$s/crop" "$R/ctx" --seed $s --set train.frozen_convs=3 > "$R/ctx.log" 2>&1
  $PY -m sppnet eval detect --run "$R/ctx/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$R/ctx/seed-$s/run/pretrain" > "$R/spp.log" 2>&1
  $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
  $PY -m sppnet analyze --data "$D" --split test --top-fp 0 --run "$R/ctx/work/pretrain-context-fast-rcnn" --out "$OUT/analysis/fr-g30-frozen3-$s" | grep "^all\|^arrow"
done
