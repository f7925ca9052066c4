#!/usr/bin/env bash
# Session 23 (2026-12-06): the SPP-net preset end to end with its in-context Fast R-CNN trained
# in bfloat16 autocast (train.precision: bf16, the CPU fast path; everything else as
# detect-fast-rcnn-tiny), then both detectors tested with their presets' (float32) test settings.
# FR_EDITS (commas): more lines under the Fast R-CNN preset's train: block, e.g.
# 'iterations: 12000' (replacing the preset's value); FR_OHEM=1 adds online hard example mining
# (sampling.hard_mining_nms 0.7, bg_low 0: session 22's settings). Held-out sets: benchmarks/heldout_set.py
# DATA/det-N --seed N (300 + 100 images). Wall time of the whole training in RUN/time.txt.
# Usage: DATA=dir-with-det-0..2 OUT=dir [SETS='0 1 2'] [FR_EDITS=...] [FR_OHEM=1] bash benchmarks/results/session23-2026-12-06.sh
set -euo pipefail
PY=${PY:-$PWD/.venv/bin/python}
PRESET="$OUT/fr.yaml"
mkdir -p "$OUT"
$PY - "$PRESET" "${FR_EDITS:-}" "${FR_OHEM:-0}" <<'PYEOF'
import re, sys
from sppnet.config import preset_path
text = preset_path("detect-fast-rcnn-tiny").read_text()
lines = ["precision: bf16"] + [e.strip() for e in sys.argv[2].split(",") if e.strip()]
for line in lines:
    key = line.split(":")[0]
    pattern = re.compile(rf"^  {key}:.*$", re.M)
    if pattern.search(text):
        text = pattern.sub(f"  {line}", text, count=1)
    else:
        assert text.count("\ntrain:\n") == 1
        text = text.replace("\ntrain:\n", f"\ntrain:\n  {line}\n")
if sys.argv[3] == "1":
    old = "    bg_low: 0.1\n    bg_high: 0.5\n"
    assert text.count(old) == 1
    text = text.replace(old, "    bg_low: 0.0\n    bg_high: 0.5\n    hard_mining_nms: 0.7\n")
open(sys.argv[1], "w").write(text)
PYEOF
for s in ${SETS:-0 1 2}; do
  D="$DATA/det-$s"; R="$OUT/set-$s"; mkdir -p "$R"
  [ -f "$R/spp.json" ] && continue
  start=$(date +%s)
  $PY -m sppnet train detect --method sppnet --data "$D" --out "$R/spp" --set "pretrain.context_preset=$PRESET" \
    > "$R/spp.log" 2>&1
  echo "training: $(( $(date +%s) - start )) s" > "$R/time.txt"
  echo "fast-rcnn set $s: $($PY -m sppnet eval detect --run "$R/spp/pretrain-context-fast-rcnn" --data "$D" \
    --split test --json "$R/fr.json" | tail -1)"
  echo "sppnet on it set $s: $($PY -m sppnet eval detect --run "$R/spp" --data "$D" --split test \
    --json "$R/spp.json" | tail -1)"
done
