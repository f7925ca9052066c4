#!/usr/bin/env bash
# Session 22 (2026-12-06): Fast R-CNN trained with online hard example mining (OHEM, Shrivastava
# et al. 2016: train.sampling.hard_mining_nms 0.7, bg_low 0, the paper's settings; 2 images of 64
# RoIs as the preset), as SPP-net's in-context stage: the SPP-net preset end to end with its
# context preset made from detect-fast-rcnn-tiny plus those two lines; SPP_EDITS (commas) are
# --set items for SPP-net's own stages. Both detectors are tested with their presets' test
# settings. Held-out sets: benchmarks/heldout_set.py DATA/det-N --seed N (300 + 100 images).
# Usage: DATA=dir-with-det-0..2 OUT=dir [SETS='0 1 2'] [SPP_EDITS=...] bash benchmarks/results/session22-fast-rcnn-2026-12-06.sh
set -euo pipefail
PY=${PY:-$PWD/.venv/bin/python}
PRESET="$OUT/fr-ohem.yaml"
mkdir -p "$OUT"
$PY - "$PRESET" <<'PYEOF'
import sys
from sppnet.config import preset_path
text = preset_path("detect-fast-rcnn-tiny").read_text()
old = "    bg_low: 0.1\n    bg_high: 0.5\n"
assert text.count(old) == 1
open(sys.argv[1], "w").write(text.replace(old, "    bg_low: 0.0\n    bg_high: 0.5\n    hard_mining_nms: 0.7\n"))
PYEOF
for s in ${SETS:-0 1 2}; do
  D="$DATA/det-$s"; R="$OUT/set-$s"; mkdir -p "$R"
  [ -f "$R/spp.json" ] && continue
  args=(--set "pretrain.context_preset=$PRESET")
  IFS=',' read -ra items <<< "${SPP_EDITS:-}"
  for item in "${items[@]}"; do [ -n "$item" ] && args+=(--set "$item"); done
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" "${args[@]}" > "$R/spp.log" 2>&1
  echo "fast-rcnn-ohem set $s: $($PY -m sppnet eval detect --run "$R/spp/pretrain-context-fast-rcnn" --data "$D" \
    --split test --json "$R/fr.json" | tail -1)"
  echo "sppnet on it set $s: $($PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test \
    --json "$R/spp.json" | tail -1)"
done
