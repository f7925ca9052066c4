#!/usr/bin/env bash
# Session 21 (2026-12-06): box voting (test.box_vote, Gidaris & Komodakis 2015). Step 1: the
# three presets as a user runs them (session 20's driver, its steps 1 and 7: the SPP-net preset
# end to end, whose in-context stage is the Fast R-CNN preset's run, and the R-CNN preset);
# step 2: each run re-tested with box voting at the IoUs in VOTES (weights unchanged); step 3:
# SPP-net with iterative localization (Gidaris & Komodakis 2015: the regressed windows scored
# and regressed again, NMS and voting over both rounds), a scratch patch applied in a worktree
# (sppnet-iterative-localization-2026-12-06.patch, HACK_ITER=1), with and without voting;
# step 4: SPP-net with voting (step 2's view of the run) fused with Fast R-CNN, with R-CNN, and all three.
# Held-out sets: benchmarks/heldout_set.py DATA/det-N --seed N (300 + 100 images).
# Usage: DATA=dir-with-det-0..2 OUT=dir bash benchmarks/results/session21-2026-12-06.sh [steps]
# (SETS='0 1 2' by default; VOTES='0.5 0.6 0.7')
set -euo pipefail
PY=${PY:-$PWD/.venv/bin/python}
STEPS=${1:-1 2 3 4}
for step in $STEPS; do
  case $step in
  1) GEN=none bash benchmarks/results/session20-2026-12-06.sh "1 7" ;;
  2) for s in ${SETS:-0 1 2}; do
       D="$DATA/det-$s"; R="$OUT/step21-2/set-$s"; mkdir -p "$R"
       for run in spp:step1/set-$s/spp fr:step1/set-$s/spp/pretrain-context-fast-rcnn rcnn:step7/set-$s/rcnn; do
         [ -d "$OUT/${run#*:}" ] || continue
         for vote in ${VOTES:-0.5 0.6 0.7}; do
           $PY benchmarks/retest.py "$OUT/${run#*:}" "$D" "$R/${run%%:*}-vote$vote" "{box_vote: $vote}"
         done
       done
     done ;;
  3) tree="$OUT/iterative"
     if [ ! -d "$tree" ]; then
       git worktree add -f --detach "$tree" HEAD
       git -C "$tree" apply "$PWD/benchmarks/results/sppnet-iterative-localization-2026-12-06.patch"
     fi
     for s in ${SETS:-0 1 2}; do
       for vote in 0.5 null; do
         (cd "$tree" && HACK_ITER=1 PYTHONPATH="$tree/src" $PY benchmarks/retest.py "$OUT/step1/set-$s/spp" \
           "$DATA/det-$s" "$OUT/step21-3/set-$s/spp-iterative-vote$vote" "{box_vote: $vote}")
       done
     done ;;
  4) for s in ${SETS:-0 1 2}; do
       D="$DATA/det-$s"; R="$OUT/step21-4/set-$s"; mkdir -p "$R"
       SPP="$OUT/step21-2/set-$s/spp-vote0.5/view" FR="$OUT/step1/set-$s/spp/pretrain-context-fast-rcnn"
       RCNN="$OUT/step7/set-$s/rcnn"
       for pair in fr:$FR rcnn:$RCNN "all:$FR --combine $RCNN"; do
         # shellcheck disable=SC2086  # "all" names two runs
         $PY -m sppnet eval detect --run "$SPP" --combine ${pair#*:} --combine-by fusion --data "$D" --split test \
           --results "$R/spp-vote-${pair%%:*}" --json "$R/spp-vote-${pair%%:*}.json" | tail -1
       done
     done ;;
  esac
done
