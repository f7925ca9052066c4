#!/usr/bin/env bash
# Session 20 (2026-12-05/06): how the pooled detectors' windows meet the scales. Step 1: the
# SPP-net preset end to end (generic stage, the in-context Fast R-CNN, which is the Fast R-CNN
# preset's run, SPP-net's stages) on each held-out set, both tested; step 2: those Fast R-CNN
# runs re-tested with window_spread (each RoI pooled at two window targets, 160 / spread and
# 160 x spread, outputs averaged; fast-rcnn-window-spread-2026-12-06.patch); step 3: the Fast R-CNN preset with train.seed=1, tested the
# same ways; step 4: Fast R-CNN trained with train.sampling.window_band 1.5 (each RoI trained only
# at the scales where its side is within 1.5x of window_target, SNIP's valid range;
# fast-rcnn-window-band-2026-12-06.patch), as SPP-net's in-context stage, set 0 only; step 5: SPP-net with scale views, a scratch patch
# (sppnet-scale-views-2026-12-06.patch: its test averages the scores of the targets in
# HACK_TARGETS, its fine-tuning pools alternate windows at the targets in HACK_TRAIN_TARGETS),
# set 0 only. Steps 2-5 run in a git worktree of HEAD with the three patches applied (OUT/patched):
# the options measured there did not help and are not in sppnet; step 6: step 1's runs re-tested with Gaussian soft-NMS
# (test.nms_sigma 0.5); step 7: the R-CNN preset (fine-tuning seed 0); step 8: model combination,
# NMS over the union (the paper's) and weighted box fusion (--combine-by fusion), of SPP-net with
# its Fast R-CNN stage (step 1) and with R-CNN (step 7).
# Held-out sets: benchmarks/heldout_set.py DATA/det-N --seed N (300 + 100 images).
# Usage: DATA=dir-with-det-0..2 OUT=dir bash benchmarks/results/session20-2026-12-06.sh [steps]
# (SETS='0 1 2' by default; SPREADS='1.12 1.26 1.41' for steps 2-3)
set -euo pipefail
PY=${PY:-$PWD/.venv/bin/python}
STEPS=${1:-1 2 3 4 5 6 7 8}
GEN=${GEN:-$(dirname "$(ls -d "${SPPNET_CACHE:-$HOME/.cache/sppnet}"/generic-trunks/*/trunk.safetensors | head -1)")/run}
retest() {  # the run $1 tested with top-level config edits $4 (YAML mapping) on data $2, into $3
  $PY benchmarks/retest.py "$@"
}
RESULTS_DIR="$PWD/benchmarks/results"
patched() {  # run "$@" in a worktree of HEAD with the session's scratch patches applied
  local tree="$OUT/patched"
  if [ ! -d "$tree" ]; then
    git worktree add -f --detach "$tree" HEAD
    for patch in fast-rcnn-window-band fast-rcnn-window-spread sppnet-scale-views; do
      git -C "$tree" apply "$RESULTS_DIR/$patch-2026-12-06.patch"
    done
  fi
  (cd "$tree" && PYTHONPATH="$tree/src" "$@")
}
for step in $STEPS; do
  for s in ${SETS:-0 1 2}; do
    D="$DATA/det-$s"; R="$OUT/step$step/set-$s"; mkdir -p "$R"
    case $step in
    1)  # the SPP-net preset as a user runs it: its Fast R-CNN stage is R/spp/pretrain-context-fast-rcnn
        $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" > "$R/spp.log" 2>&1
        $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
        $PY -m sppnet eval detect --run "$R/spp/pretrain-context-fast-rcnn" --data "$D" --split test \
          --json "$R/fr.json" | tail -1 ;;
    2|3)  # Fast R-CNN (step 1's, or the preset with training seed 1) at window_spread 1 and others
        FR="$OUT/step1/set-$s/spp/pretrain-context-fast-rcnn"
        if [ "$step" = 3 ]; then
          FR="$R/fr-seed1"
          $PY -m sppnet train detect --method fast-rcnn --data "$D" --out "$FR" --backbone "$GEN" \
            --set train.seed=1 > "$R/fr-seed1.log" 2>&1
        fi
        for spread in 1.0 ${SPREADS:-1.12 1.26 1.41}; do
          patched $PY benchmarks/retest.py "$FR" "$D" "$R/spread$spread" "{window_spread: $spread}"
        done ;;
    4)  # the in-context Fast R-CNN trained with window_band 1.5 (a preset file made from the preset)
        BAND="$OUT/fr-band15.yaml"
        $PY - "$BAND" <<'EOF'
import sys
from sppnet.config import preset_path
text = preset_path("detect-fast-rcnn-tiny").read_text()
assert "    bg_high: 0.5\n" in text
open(sys.argv[1], "w").write(text.replace("    bg_high: 0.5\n", "    bg_high: 0.5\n    window_band: 1.5\n", 1))
EOF
        patched $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" \
          --set pretrain.context_preset="$BAND" > "$R/spp.log" 2>&1
        patched $PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test --json "$R/spp.json" | tail -1
        patched $PY -m sppnet eval detect --run "$R/spp/pretrain-context-fast-rcnn" --data "$D" --split test \
          --json "$R/fr.json" | tail -1 ;;
    5)  # SPP-net with scale views (scratch patch in a worktree): step 1's run re-tested, and its
        # stages retrained on step 1's trunk with fine-tuning windows at both targets
        SPP="$OUT/step1/set-$s/spp"
        for t in 160 127,202 113,160,226 100,160,256; do
          HACK_TARGETS=$t patched $PY benchmarks/retest.py "$SPP" "$D" "$R/spp-$t" '{}'
        done
        HACK_TRAIN_TARGETS=127,202 patched $PY -m sppnet train detect --method sppnet \
          --data "$D" --out "$R/spp-tt" --backbone "$SPP/pretrain-context" > "$R/spp-tt.log" 2>&1
        for t in 160 127,202; do
          HACK_TARGETS=$t patched $PY benchmarks/retest.py "$R/spp-tt" "$D" "$R/spp-tt-$t" '{}'
        done ;;
    6)  # Gaussian soft-NMS instead of NMS at 0.3
        for run in fr:spp/pretrain-context-fast-rcnn spp:spp; do
          retest "$OUT/step1/set-$s/${run#*:}" "$D" "$R/${run%%:*}-sigma0.5" '{nms_sigma: 0.5}'
        done ;;
    7)  # the R-CNN preset as a user runs it
        $PY -m sppnet train detect --method rcnn --data "$D" --out "$R/rcnn" > "$R/rcnn.log" 2>&1
        $PY -m sppnet eval detect --run "$R/rcnn" --data "$D" --split test --json "$R/rcnn.json" | tail -1 ;;
    8)  # two models combined: SPP-net with its Fast R-CNN stage (one trunk) and with R-CNN
        SPP="$OUT/step1/set-$s/spp"
        for other in fr:$SPP/pretrain-context-fast-rcnn rcnn:$OUT/step7/set-$s/rcnn; do
          for by in nms fusion; do
            $PY -m sppnet eval detect --run "$SPP" --combine "${other#*:}" --combine-by $by --data "$D" --split test \
              --results "$R/spp-${other%%:*}-$by" --json "$R/spp-${other%%:*}-$by.json" | tail -1
          done
        done
        # all three, fused
        $PY -m sppnet eval detect --run "$SPP" --combine "$SPP/pretrain-context-fast-rcnn" --combine "$OUT/step7/set-$s/rcnn" \
          --combine-by fusion --data "$D" --split test --results "$R/all-fusion" --json "$R/all-fusion.json" | tail -1 ;;
    esac
  done
done
