#!/usr/bin/env bash
# Session 22 (2026-12-06): SPP-net's fc fine-tuning with online hard example mining (OHEM,
# Shrivastava et al. 2016; finetune.hard_mining_nms). Each variant retrains SPP-net's stages
# (fine-tuning, SVMs, box regression) on the in-context trunk of session 20's preset run
# (BASE/set-N/spp/pretrain-context: BASE is session 20's step-1 folder, whose runs session 21
# reproduced to the digit) and is tested with the preset's test settings (flip testing, box
# voting 0.5). Held-out sets: benchmarks/heldout_set.py DATA/det-N --seed N (300 + 100 images).
# Usage: DATA=dir-with-det-0..2 BASE=session20-step1-dir OUT=dir bash benchmarks/results/session22-2026-12-06.sh
# VARIANTS: space-separated name=--set-args (commas separate --set items); SETS ('0 1 2'); SEEDS ('0').
# The session's runs (RESULTS.md "Online hard example mining"): VARIANTS='base= ohem=...' (the default) with
# SEEDS='0 1'; bglow0=finetune.bg_low=0; ohem01=finetune.hard_mining_nms=0.7;
# ohemn2=finetune.hard_mining_nms=0.7,finetune.bg_low=0,finetune.images_per_batch=2;
# ohem1500=finetune.hard_mining_nms=0.7,finetune.bg_low=0,finetune.iterations=1500,finetune.lr_steps=[1000];
# and VARIANTS=ohem=... with BASE=the OUT of session22-fast-rcnn-2026-12-06.sh (the OHEM Fast R-CNN's trunks).
# Since session 22 the preset itself mines (hard_mining_nms 0.7, bg_low 0): 'base=' then means
# base=finetune.hard_mining_nms=0,finetune.bg_low=0.1 to repeat these runs.
set -euo pipefail
PY=${PY:-$PWD/.venv/bin/python}
for variant in ${VARIANTS:-base= ohem=finetune.hard_mining_nms=0.7,finetune.bg_low=0}; do
  name=${variant%%=*}; edits=${variant#*=}
  for seed in ${SEEDS:-0}; do
    for s in ${SETS:-0 1 2}; do
      D="$DATA/det-$s"; R="$OUT/$name-seed$seed/set-$s"; mkdir -p "$R"
      [ -f "$R/spp.json" ] && continue
      args=(--set "finetune.seed=$seed")
      IFS=',' read -ra items <<< "$edits"
      for item in "${items[@]}"; do [ -n "$item" ] && args+=(--set "$item"); done
      $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" \
        --backbone "$BASE/set-$s/spp/pretrain-context" "${args[@]}" > "$R/spp.log" 2>&1
      echo "$name seed $seed set $s: $($PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test \
        --json "$R/spp.json" | tail -1)"
      rm -rf "$R/spp/features"
    done
  done
done
