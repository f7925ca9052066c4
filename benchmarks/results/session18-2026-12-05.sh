#!/usr/bin/env bash
# Session 18 (2026-12-05): test scales of Fast R-CNN and SPP-net (steps 1-2), Fast R-CNN's
# preset retrained at max_side 2000 with SPP-net on its trunk (3-4), SPP-net's fine-tuning
# length (5), Fast R-CNN's preset with another training seed (6), error analysis of step 1 (7), R-CNN's
# preset with fine-tuning seed 1 (8). The demo's seeds:
# `sppnet demo --seed N`. Held-out sets: session 14's (benchmarks/heldout_set.py OUT --seed N,
# 300 + 100 images).
# Usage: DATA=dir-with-det-0..2 RUNS16=dir RUNS17=dir OUT=dir bash benchmarks/results/session18-2026-12-05.sh [steps]
# RUNS16/set-N: session 16's step 2 (benchmarks/results/session16-2026-12-05.sh); its in-context
# Fast R-CNN (RUNS16/set-N/seed-0/run/pretrain-context-fast-rcnn) is the Fast R-CNN preset's own run
# as it was (the same seed and config; session 16 checked it on set 0). RUNS17: session 17's OUT
# (benchmarks/results/session17-2026-12-05.sh): step2/set-N/spp and step3/set-N/spp-context-fc-fs{1,2}
# are SPP-net's preset runs (fine-tuning seeds 0, 1, 2).
set -euo pipefail
PY=${PY:-.venv/bin/python}
GEN=${GEN:-$(dirname "$(ls -d "${SPPNET_CACHE:-$HOME/.cache/sppnet}"/generic-trunks/*/trunk.safetensors | head -1)")/run}
STEPS=${1:-1 2 3 4 5 6 7 8}
retest() {  # the run $1 tested with top-level config edits $4 (YAML mapping) on data $2, into $3
  $PY benchmarks/retest.py "$@"
}
for step in $STEPS; do
  for s in 0 1 2; do
    D="$DATA/det-$s"; R="$OUT/step$step/set-$s"; mkdir -p "$R"
    case $step in
    1)  # Fast R-CNN's preset runs of session 16 at other test scales
        FR="$RUNS16/set-$s/seed-0/run/pretrain-context-fast-rcnn"
        retest "$FR" "$D" "$R/s3" '{scales: [192, 384, 640], max_side: 1000}'
        retest "$FR" "$D" "$R/s4" '{scales: [192, 384, 640, 1024], max_side: 2000}'
        retest "$FR" "$D" "$R/s4-cap1000" '{scales: [192, 384, 640, 1024], max_side: 1000}'
        retest "$FR" "$D" "$R/s5-128" '{scales: [128, 192, 384, 640, 1024], max_side: 2000}'
        retest "$FR" "$D" "$R/s5-1400" '{scales: [192, 384, 640, 1024, 1400], max_side: 2000}'
        retest "$FR" "$D" "$R/geo5" '{scales: [192, 292, 443, 674, 1024], max_side: 2000}'
        retest "$FR" "$D" "$R/geo7" '{scales: [192, 254, 336, 444, 587, 776, 1024], max_side: 2000}'
        retest "$FR" "$D" "$R/dense7" '{scales: [192, 288, 384, 512, 640, 832, 1024], max_side: 2000}' ;;
    2)  # SPP-net's preset runs of session 17 (fine-tuning seeds 0-2) at denser test scales
        for run in "$RUNS17/step2/set-$s/spp" "$RUNS17/step3/set-$s/spp-context-fc-fs1" "$RUNS17/step3/set-$s/spp-context-fc-fs2"; do
          name=$(basename "$(dirname "$run")")-$(basename "$run")
          retest "$run" "$D" "$R/$name-geo5" '{scales: [192, 292, 443, 674, 1024]}'
          retest "$run" "$D" "$R/$name-geo7" '{scales: [192, 254, 336, 444, 587, 776, 1024]}'
        done ;;
    3)  # the Fast R-CNN preset retrained as it is now (max_side 2000, tested at 192-1024), through
        # SPP-net's in-context stage (the same Fast R-CNN), then SPP-net's preset on it
        $PY benchmarks/in_context_trunk.py "$D" "$GEN" "$R" --context-fc > "$R/ctx.log" 2>&1
        $PY -m sppnet eval detect --run "$R/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
        $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --backbone "$R/seed-0/run/pretrain" > "$R/spp.log" 2>&1
        $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1 ;;
    4)  # SPP-net's fine-tuning seeds 1 and 2 on step 3's trunks
        for fs in 1 2; do
          T="$OUT/step3/set-$s/seed-0/run/pretrain"
          $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp-fs$fs" --backbone "$T" \
            --set finetune.seed=$fs > "$R/spp-fs$fs.log" 2>&1
          $PY -m sppnet eval detect --run "$R/spp-fs$fs" --data "$D" --split test --json "$R/spp-fs$fs.json" | tail -1
        done ;;
    5)  # SPP-net's fc fine-tuning half and twice as long (lr step at the same fraction) on step 3's trunks
        for it in 1500:1000 6000:4000; do
          T="$OUT/step3/set-$s/seed-0/run/pretrain"; N=${it%:*}
          $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp-it$N" --backbone "$T" \
            --set finetune.iterations=$N --set "finetune.lr_steps=[${it#*:}]" > "$R/spp-it$N.log" 2>&1
          $PY -m sppnet eval detect --run "$R/spp-it$N" --data "$D" --split test --json "$R/spp-it$N.json" | tail -1
        done ;;
    6)  # the Fast R-CNN preset retrained with another training seed (train.seed 1: fc init, RoI sampling, flips)
        $PY -m sppnet train detect --method fast-rcnn --data "$D" --out "$R/fr-seed1" --backbone "$GEN" \
          --set train.seed=1 > "$R/fr-seed1.log" 2>&1
        $PY -m sppnet eval detect --run "$R/fr-seed1" --data "$D" --split test --json "$R/fr-seed1.json" | tail -1 ;;
    7)  # error analysis of step 1's Fast R-CNN tests at three and at four scales (AP by object size)
        for v in s3 s4; do
          $PY -m sppnet analyze --data "$D" --split test --results "$OUT/step1/set-$s/$v/results-view" --out "$R/$v" --top-fp 3 | tail -6
        done ;;
    8)  # the R-CNN preset (unchanged since session 16) with fine-tuning seed 1
        $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn-seed1" --backbone "$GEN" \
          --set finetune.seed=1 > "$R/rcnn-seed1.log" 2>&1
        $PY -m sppnet eval detect --run "$R/rcnn-seed1" --data "$D" --split test --json "$R/rcnn-seed1.json" | tail -1 ;;
    esac
  done
done
