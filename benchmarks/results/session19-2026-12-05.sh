#!/usr/bin/env bash
# Session 19 (2026-12-05): the window target of the pooled detectors' multi-scale test, the
# scale at which each window is pooled (the one where its area is closest to window_target
# squared). Step 1: Fast R-CNN's preset runs of session 18 (training seed 0) re-tested at other
# targets; step 2: the same for its training-seed-1 runs; step 3: SPP-net's preset retrained at
# window_target 160 (its fine-tuning features, SVMs and test are pooled at that target) on
# session 18's trunks, fine-tuning seeds 0-2; step 4: error analysis of Fast R-CNN at 96 and 160 (and of
# SPP-net at 96 and 160, R-CNN with step 5's channel order);
# step 5: R-CNN's preset with finetune.channel_order (each image's warped windows in a random
# colour-channel order), fine-tuning seeds 0 and 1 (the same seeds' runs without it: session 16's
# preset runs and session 18's step 8); step 6: SPP-net at window_target 160 trained at its four
# test scales (train_scales 192-1024), fine-tuning seed 0; step 7: benchmarks/ablations.py on
# step 3's runs (fine-tuning seed 0), the Fast R-CNN rows at window_target 160, R-CNN's preset runs
# RCNN_RUNS ('{seed}' for the set); step 8: SPP-net (step 3, fine-tuning seed 0) combined with
# R-CNN (step 5, seed 0), two models of different trunks as the paper's combination; step 9:
# SPP-net's preset at window_target 128 and 192 (fine-tuning seed 0), either side of 160.
# Held-out sets: session 14's (benchmarks/heldout_set.py OUT --seed N, 300 + 100 images).
# Usage: DATA=dir-with-det-0..2 RUNS18=dir OUT=dir bash benchmarks/results/session19-2026-12-05.sh [steps]
# (step 7 also RCNN_RUNS='OUT/step5/set-{seed}/rcnn-co-fs0'; step 5 SEEDS='0 1' by default; steps 1-2
# WTS='96 ...' to re-test only some targets)
# RUNS18: session 18's OUT (benchmarks/results/session18-2026-12-05.sh): step3/set-N/work/
# pretrain-context-fast-rcnn is the Fast R-CNN preset's run, step3/set-N/seed-0/run/pretrain the
# trunk SPP-net's preset trains on, step6/set-N/fr-seed1 the Fast R-CNN preset with train.seed=1.
set -euo pipefail
PY=${PY:-.venv/bin/python}
STEPS=${1:-1 2 3 4 5 6 7 8 9}
GEN=${GEN:-$(dirname "$(ls -d "${SPPNET_CACHE:-$HOME/.cache/sppnet}"/generic-trunks/*/trunk.safetensors | head -1)")/run}
retest() {  # the run $1 tested with top-level config edits $4 (YAML mapping) on data $2, into $3
  $PY benchmarks/retest.py "$@"
}
for step in $STEPS; do
  for s in 0 1 2; do
    D="$DATA/det-$s"; R="$OUT/step$step/set-$s"; mkdir -p "$R"
    case $step in
    1|2)  # Fast R-CNN's preset runs (training seed 0, then 1) at other window targets
        if [ "$step" = 1 ]; then FR="$RUNS18/step3/set-$s/work/pretrain-context-fast-rcnn"; else FR="$RUNS18/step6/set-$s/fr-seed1"; fi
        for wt in ${WTS:-96 128 144 160 192 224}; do retest "$FR" "$D" "$R/wt$wt" "{window_target: $wt}"; done
        # step 1 only: a fifth scale, 1400, at window_target 160
        [ "$step" = 1 ] && [ -z "${WTS:-}" ] && retest "$FR" "$D" "$R/wt160-1400" '{window_target: 160, scales: [192, 384, 640, 1024, 1400]}'
        true ;;
    3)  # SPP-net's preset at window_target 160 on session 18's trunks, fine-tuning seeds 0-2
        for fs in 0 1 2; do
          $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp-wt160-fs$fs" \
            --backbone "$RUNS18/step3/set-$s/seed-0/run/pretrain" --set window_target=160 --set finetune.seed=$fs \
            > "$R/spp-wt160-fs$fs.log" 2>&1
          $PY -m sppnet eval detect --run "$R/spp-wt160-fs$fs" --data "$D" --split test --json "$R/spp-wt160-fs$fs.json" | tail -1
        done ;;
    4)  # error analysis of step 1's tests at 96 and 160 (AP by object size and class)
        for wt in 96 160; do
          $PY -m sppnet analyze --data "$D" --split test --results "$OUT/step1/set-$s/wt$wt/results-view" --out "$R/wt$wt" --top-fp 3 | tail -6
        done
        # and SPP-net before (session 18's preset run) and after (step 3, seed 0), R-CNN of step 5 (seed 0)
        $PY -m sppnet analyze --data "$D" --split test --results "$RUNS18/step3/set-$s/spp/results-test" --out "$R/spp96" --top-fp 3 | tail -1
        $PY -m sppnet analyze --data "$D" --split test --results "$OUT/step3/set-$s/spp-wt160-fs0/results-test" --out "$R/spp160" --top-fp 3 | tail -1
        $PY -m sppnet analyze --data "$D" --split test --results "$OUT/step5/set-$s/rcnn-co-fs0/results-test" --out "$R/rcnn-co" --top-fp 3 | tail -1 ;;
    5)  # R-CNN's preset with the channel order of its fine-tuning windows, fine-tuning seeds 0 and 1
        for fs in ${SEEDS:-0 1}; do
          $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn-co-fs$fs" --backbone "$GEN" \
            --set finetune.channel_order=true --set finetune.seed=$fs > "$R/rcnn-co-fs$fs.log" 2>&1
          $PY -m sppnet eval detect --run "$R/rcnn-co-fs$fs" --data "$D" --split test --json "$R/rcnn-co-fs$fs.json" | tail -1
        done ;;
    6)  # SPP-net at window_target 160, trained at its test scales
        $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp-wt160-ts4" \
          --backbone "$RUNS18/step3/set-$s/seed-0/run/pretrain" --set window_target=160 \
          --set "train_scales=[192, 384, 640, 1024]" > "$R/spp-wt160-ts4.log" 2>&1
        $PY -m sppnet eval detect --run "$R/spp-wt160-ts4" --data "$D" --split test --json "$R/spp-wt160-ts4.json" | tail -1 ;;
    7)  # the ablation rows: ablations.py finds the Fast R-CNN next to the SPP-net run's trunk
        mkdir -p "$OUT/abl-data"; ln -sfn "$D" "$OUT/abl-data/data-heldout-$s-300-100"
        FR="$RUNS18/step3/set-$s/work/pretrain-context-fast-rcnn"
        retest "$FR" "$D" "$R/fr-wt160" '{window_target: 160}'
        ln -sfn "$R/fr-wt160/view" "$RUNS18/step3/set-$s/seed-0/run/pretrain-context-fast-rcnn"
        if [ "$s" = 2 ]; then
          $PY benchmarks/ablations.py "$OUT/step7/abl" --data-root "$OUT/abl-data" \
            --sppnet-runs "$OUT/step3/set-{seed}/spp-wt160-fs0" --rcnn-runs "$RCNN_RUNS" | tail -12
        fi ;;
    8)  # SPP-net + R-CNN: NMS over the union of both runs' detections
        $PY -m sppnet eval detect --run "$OUT/step3/set-$s/spp-wt160-fs0" --combine "$OUT/step5/set-$s/rcnn-co-fs0" \
          --data "$D" --split test --results "$R/spp-rcnn" --json "$R/spp-rcnn.json" | tail -1 ;;
    9)  # SPP-net's preset at window targets either side of 160
        for wt in 128 192; do
          $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp-wt$wt" \
            --backbone "$RUNS18/step3/set-$s/seed-0/run/pretrain" --set window_target=$wt > "$R/spp-wt$wt.log" 2>&1
          $PY -m sppnet eval detect --run "$R/spp-wt$wt" --data "$D" --split test --json "$R/spp-wt$wt.json" | tail -1
        done ;;
    esac
  done
done
