#!/usr/bin/env bash
# Session 35 (issue 14): SPP-net's own stages (fine-tuning, SVMs, box regression) trained again
# with --set overrides on finished runs of synth-benchmark-2026-12-07.sh, the in-context trunk
# and the training images' conv5 maps reused (~1-1.5 min per run instead of ~11).
#
#   BASE=/tmp/s34/det OUT=/tmp/ft NAME=ft1500 SEEDS="0 1 2" \
#     bash benchmarks/results/sppnet-stages-retrain-2026-12-07.sh finetune.iterations=1500 "finetune.lr_steps=[1000]"
#
# Each BASE/sppnet-S (data BASE/data-S-sppnet) is copied to OUT/NAME-S without its trained
# stages, config and results (conv5 maps hard-linked), its backbone.txt files pointed at the
# copy, and resumed with the overrides; then tested (OUT/NAME-S.json) and logged to OUT/time.txt.
# With no overrides it retrains the preset's stages: session 35's copy of set 0 gave the
# original run's 84.10 mAP to the digit.
set -uo pipefail
cd "$(dirname "$0")/../.."
BASE=${BASE:?set BASE to the folder of the finished runs}
OUT=${OUT:?set OUT to a folder for the runs}
NAME=${NAME:?set NAME to label the variant}
SRC=${SRC:-$PWD/src}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
SET_ARGS=()
for A in "$@"; do SET_ARGS+=(--set "$A"); done
for S in ${SEEDS:-0 1 2}; do
  FROM=$BASE/sppnet-$S; DATA=$BASE/data-$S-sppnet; RUN=$OUT/$NAME-$S
  [ -f "$RUN.json" ] && continue
  rm -rf "$RUN"; mkdir -p "$RUN"
  for f in backbone.txt classes.txt environment.jsonl pretrain pretrain-context pretrain-context-fast-rcnn; do
    cp -r "$FROM/$f" "$RUN/"
  done
  cp -al "$FROM/features" "$RUN/features"
  find "$RUN" -name backbone.txt -exec sed -i "s|$FROM/|$RUN/|" {} +
  start=$(date +%s)
  PYTHONPATH=$SRC $PY -m sppnet train detect --method sppnet --data "$DATA" --out "$RUN" --resume \
    "${SET_ARGS[@]}" > "$RUN.log" 2>&1
  echo "$NAME seed $S training: $(( $(date +%s) - start )) s" >> "$OUT/time.txt"
  PYTHONPATH=$SRC $PY -m sppnet eval detect --run "$RUN" --data "$DATA" --split test --json "$RUN.json" >> "$RUN.log" 2>&1
  $PY -c "import json; print('$NAME seed $S', round(100 * json.load(open('$RUN.json'))['map'], 2))" >> "$OUT/time.txt"
done
