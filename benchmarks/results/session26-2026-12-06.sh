#!/usr/bin/env bash
# Session 26 (2026-12-06): R-CNN from the in-context trunk (RESULTS.md "R-CNN from the in-context trunk").
# Each run is `sppnet train detect --method rcnn` + `sppnet eval detect`, one at a time, on the held-out
# sets made by `python benchmarks/heldout_set.py DATA/det-N --seed N`.
#
#   DATA=... OUT=... VARIANT=NAME bash benchmarks/results/session26-2026-12-06.sh
#
# VARIANT:
#   ctx9000   the old preset's fine-tuning (float32, 3000 iterations, pre-training off) from an SPP-net
#             preset run's in-context classifier: BACKBONE=SPPNET_RUN/pretrain-context
#   ctx4500   the in-context stage at 4500 iterations and bf16 fine-tuning, written out as --set
#             (what detect-rcnn-tiny has since this session)
#   preset    detect-rcnn-tiny as it is
set -euo pipefail
: "${DATA:?the dataset folder}" "${OUT:?the run folder to make}" "${VARIANT:?ctx9000, ctx4500 or preset}"
args=()
case "$VARIANT" in
  ctx9000) args=(--backbone "${BACKBONE:?SPPNET_RUN/pretrain-context}" --set finetune.precision=fp32
                 --set pretrain.context_preset=null) ;;
  ctx4500) args=(--set pretrain.context_preset=detect-fast-rcnn-tiny
                 --set 'pretrain.context_overrides=["train.sampling.hard_mining_nms=0.0","train.sampling.bg_low=0.1"]'
                 --set pretrain.context_iterations=4500 --set pretrain.context_fc=true --set finetune.precision=bf16) ;;
  preset) ;;
  *) echo "unknown VARIANT $VARIANT" >&2; exit 2 ;;
esac
start=$(date +%s)
python -m sppnet train detect --method rcnn --data "$DATA" --out "$OUT" "${args[@]}" "$@"
echo "training: $(( $(date +%s) - start )) s"
python -m sppnet eval detect --run "$OUT" --data "$DATA" --split test --json "$OUT.json"
