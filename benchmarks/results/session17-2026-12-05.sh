#!/usr/bin/env bash
# Session 17 (2026-12-05): what SPP-net's fc layers start from, a smaller test scale,
# SPP levels in the in-context Fast R-CNN, its lr warm-up, and an in-context stage for
# the demo. Held-out sets: session 14's (benchmarks/heldout_set.py OUT --seed N, 300 + 100 images).
# Usage: DATA=dir-with-det-0..2 RUNS16=dir OUT=dir bash benchmarks/results/session17-2026-12-05.sh [steps]
# RUNS16/set-N is session 16's step 2 (benchmarks/results/session16-2026-12-05.sh): the preset's
# in-context trunk (RUNS16/set-N/seed-0/run/pretrain) and SPP-net on it (RUNS16/set-N/spp).
# Steps 2 and 3 reproduce the session's runs, which took the in-context Fast R-CNN of
# RUNS16 instead of training it again (seeded: the same weights; the CLI's own run on set 0
# gave the same losses and mAP) and built the context-fc classifier from it with the
# arithmetic of engine.pretrain's context_fc; step 5's fc arm was built the same way from
# its trunk arm's Fast R-CNN, which this script trains twice.
set -euo pipefail
PY=${PY:-.venv/bin/python}
GEN=${GEN:-$(dirname "$(ls -d "${SPPNET_CACHE:-$HOME/.cache/sppnet}"/generic-trunks/*/trunk.safetensors | head -1)")/run}
STEPS=${1:-1 2 3 4 5 6}
spp() {  # SPP-net's preset on the classifier run $2 -> $3, scored; extra --set arguments after
  local D=$1 B=$2 R=$3; shift 3
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$R" --backbone "$B" "$@" > "$R.log" 2>&1
  $PY -m sppnet eval detect --run "$R" --data "$D" --split test --json "$R.json" | tail -1
}
for step in $STEPS; do
  for s in 0 1 2; do
    D="$DATA/det-$s"; R="$OUT/step$step/set-$s"; mkdir -p "$R"
    case $step in
    1)  # SPP-net's preset runs tested with a fifth, smaller scale (128) added
        $PY - "$RUNS16/set-$s/spp" "$D" "$R" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from ablations import evaluate, view
run, data, out = map(Path, sys.argv[1:])
print(evaluate(view(run, out / "view", {"scales": [128, 192, 384, 640, 1024]}), data, out, "scales 128-1024", [])["map"])
PY
        ;;
    2)  # the in-context stage handing over the Fast R-CNN's fc6/fc7 (pretrain.context_fc), SPP-net on it
        $PY benchmarks/in_context_trunk.py "$D" "$GEN" "$R" --context-fc > "$R/ctx.log" 2>&1
        spp "$D" "$R/seed-0/run/pretrain" "$R/spp" ;;
    3)  # SPP-net's fine-tuning seed (finetune.seed 1, 2) on the preset's trunk and on step 2's
        for fs in 1 2; do
          spp "$D" "$RUNS16/set-$s/seed-0/run/pretrain" "$R/spp-preset-fs$fs" --set finetune.seed=$fs
          spp "$D" "$OUT/step2/set-$s/seed-0/run/pretrain" "$R/spp-context-fc-fs$fs" --set finetune.seed=$fs
        done ;;
    4)  # the in-context Fast R-CNN pooling at the SPP levels (6, 3, 2, 1), handing over its fc6/fc7
        $PY benchmarks/in_context_trunk.py "$D" "$GEN" "$R" --context-fc --set "levels=[6,3,2,1]" > "$R/ctx.log" 2>&1
        $PY -m sppnet eval detect --run "$R/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
        spp "$D" "$R/seed-0/run/pretrain" "$R/spp" ;;
    5)  # the in-context Fast R-CNN with a 500-iteration lr warm-up; SPP-net on its trunk, with and without its fc
        $PY benchmarks/in_context_trunk.py "$D" "$GEN" "$R/trunk" --set train.warmup_iterations=500 > "$R/ctx.log" 2>&1
        $PY -m sppnet eval detect --run "$R/trunk/work/pretrain-context-fast-rcnn" --data "$D" --split test --json "$R/fr.json" | tail -1
        spp "$D" "$R/trunk/seed-0/run/pretrain" "$R/spp-trunk"
        $PY benchmarks/in_context_trunk.py "$D" "$GEN" "$R/fc" --context-fc --set train.warmup_iterations=500 > "$R/ctx-fc.log" 2>&1
        spp "$D" "$R/fc/seed-0/run/pretrain" "$R/spp-fc" ;;
    6)  # the demo as it was (seed s; --context-iterations 0), then an in-context stage of 1000 iterations
        # on the demo's 60 training images from its classifier, SPP-net's preset on its trunk (and, without
        # the warm-up, on its trunk and fc layers); `sppnet demo` now does the warm-up arm itself
        DEMO="$R/demo"; $PY -m sppnet demo --seed "$s" --out "$DEMO" --context-iterations 0 > "$R/demo.log" 2>&1
        for warm in 0 200; do
          C="$R/ctx-warm$warm"
          $PY benchmarks/in_context_trunk.py "$DEMO/data-detect" "$DEMO/run-classify" "$C" --iterations 1000 \
            --set train.warmup_iterations=$warm > "$C.log" 2>&1
          spp "$DEMO/data-detect" "$C/seed-0/run/pretrain" "$C/spp"
          if [ "$warm" = 0 ]; then
            $PY benchmarks/in_context_trunk.py "$DEMO/data-detect" "$DEMO/run-classify" "$C-fc" --iterations 1000 \
              --context-fc > "$C-fc.log" 2>&1
            spp "$DEMO/data-detect" "$C-fc/seed-0/run/pretrain" "$C-fc/spp"
          fi
        done ;;
    esac
  done
done
