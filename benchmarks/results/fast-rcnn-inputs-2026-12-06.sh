#!/usr/bin/env bash
# One-off (session 27): Fast R-CNN's training before and after its images and proposals were kept in
# memory (engine.memory_cache), side by side, interleaved: the in-context recipe for 600 iterations from
# the generic classifier. Prints each run's last log line (losses and seconds); the losses must match.
#
#   BEFORE=SRC_DIR AFTER=SRC_DIR DATA=... TRUNK=GENERIC_CLASSIFIER_RUN bash benchmarks/results/fast-rcnn-inputs-2026-12-06.sh
#
# SRC_DIR: the src/ of a checkout (git worktree add /tmp/before a09f58b; /tmp/after at bee4f5c or later).
set -euo pipefail
: "${BEFORE:?}" "${AFTER:?}" "${DATA:?}" "${TRUNK:?e.g. ~/.cache/sppnet/generic-trunks/HASH/run}"
OUT=$(mktemp -d)
for round in 1 2; do
  for side in before after; do
    src=$BEFORE; [ "$side" = after ] && src=$AFTER
    PYTHONPATH=$src python -m sppnet train detect --method fast-rcnn --data "$DATA" --out "$OUT/$side-$round" \
      --backbone "$TRUNK" --set train.iterations=600 --set 'train.lr_steps=[400]' \
      --set train.sampling.hard_mining_nms=0.0 --set train.sampling.bg_low=0.1 > "$OUT/$side-$round.log" 2>&1
    echo "round $round $side: $(grep 'iteration 600/600' "$OUT/$side-$round.log")"
  done
done
