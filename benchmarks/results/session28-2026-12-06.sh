#!/usr/bin/env bash
# Session 28 (2026-12-06): RESULTS.md "numba's parallel builds; SPP-net's pooled windows kept".
# Training-time A/B of two source trees (BEFORE: 7a6f8b3, AFTER: fc985cc), interleaved, two rounds, each
# `sppnet train detect` run alone on the machine; the logs give each stage's seconds, and the runs' weights
# are compared file by file (the same to the bit in every pair measured).
#
#   BEFORE=SRC AFTER=SRC DATA=.../det-0 OUT=DIR STAGE=NAME TRUNK=... bash benchmarks/results/session28-2026-12-06.sh [--set ...]
# (further arguments go to every `sppnet train detect`, e.g. the papers' sampling for SPP-net's fine-tuning:
#  --set finetune.hard_mining_nms=0.0 --set finetune.bg_low=0.1)
#
# STAGE:
#   sppnet-finetune   SPP-net's fc fine-tuning (the preset's OHEM, bf16), 600 iterations, from a preset
#                     SPP-net run's in-context classifier: TRUNK=SPPNET_RUN/pretrain-context
#   rcnn-finetune     R-CNN's whole-network fine-tuning, 200 iterations, from a preset R-CNN run's
#                     in-context classifier: TRUNK=RCNN_RUN/pretrain-context
#   in-context        the in-context Fast R-CNN stage (papers' sampling), 900 iterations from the generic
#                     classifier: TRUNK=~/.cache/sppnet/generic-trunks/KEY/run
# The whole presets (one run each on a copy of the set, proposals computed in the run):
#   `sppnet train detect --method M --data D --out R` and `sppnet eval detect --run R --data D --split test`.
set -euo pipefail
: "${BEFORE:?src tree}" "${AFTER:?src tree}" "${DATA:?dataset}" "${OUT:?folder}" "${STAGE:?see above}" "${TRUNK:?see above}"
case "$STAGE" in
  sppnet-finetune) args=(--method sppnet --set finetune.iterations=600 --set 'finetune.lr_steps=[400]') ;;
  rcnn-finetune) args=(--method rcnn --set finetune.iterations=200 --set 'finetune.lr_steps=[150]') ;;
  in-context) args=(--method fast-rcnn --set train.iterations=900 --set train.sampling.hard_mining_nms=0.0
                    --set train.sampling.bg_low=0.1 --set 'train.lr_steps=[600]' --set train.checkpoint_every=1000) ;;
  *) echo "unknown STAGE $STAGE" >&2; exit 2 ;;
esac
for round in 1 2; do
  for tree in BEFORE AFTER; do
    run="$OUT/$STAGE-$tree-$round"
    rm -rf "$run"
    PYTHONPATH="${!tree}" python -m sppnet train detect --data "$DATA" --out "$run" --backbone "$TRUNK" "${args[@]}" "$@" \
      > "$run.log" 2>&1
    echo "$tree round $round: $(grep -E 'stages done|iteration 900/' "$run.log")"
  done
done
