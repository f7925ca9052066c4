#!/usr/bin/env bash
# Session 27 (2026-12-06): RESULTS.md "SPP-net at one scale, trained at it; R-CNN with conv1 frozen".
# Each run is `sppnet train detect` + `sppnet eval detect`, one at a time, on the held-out sets made by
# `python benchmarks/heldout_set.py DATA/det-N --seed N`.
#
#   DATA=... OUT=... VARIANT=NAME [TRUNK=...] bash benchmarks/results/session27-2026-12-06.sh
#
# VARIANT:
#   spp-one-scale   SPP-net's fc stages trained and tested at 640 alone, from a preset SPP-net run's
#                   in-context classifier: TRUNK=SPPNET_RUN/pretrain-context
#   rcnn-conv1      R-CNN's fine-tuning with conv1 kept as pre-trained, from a preset R-CNN run's
#                   in-context classifier: TRUNK=RCNN_RUN/pretrain-context (TRUNK unset: the preset's stage)
#   sppnet | rcnn | fast-rcnn   the method's preset as it is
set -euo pipefail
: "${DATA:?the dataset folder}" "${OUT:?the run folder to make}" "${VARIANT:?see above}"
method=$VARIANT
args=()
case "$VARIANT" in
  spp-one-scale) method=sppnet; args=(--backbone "${TRUNK:?SPPNET_RUN/pretrain-context}" --set 'scales=[640]' --set train_scales=null) ;;
  rcnn-conv1) method=rcnn; args=(--set finetune.frozen_convs=1); [ -n "${TRUNK:-}" ] && args+=(--backbone "$TRUNK") ;;
  sppnet|rcnn|fast-rcnn) ;;
  *) echo "unknown VARIANT $VARIANT" >&2; exit 2 ;;
esac
start=$(date +%s)
python -m sppnet train detect --method "$method" --data "$DATA" --out "$OUT" "${args[@]}" "$@"
echo "training: $(( $(date +%s) - start )) s"
python -m sppnet eval detect --run "$OUT" --data "$DATA" --split test --json "$OUT.json"
