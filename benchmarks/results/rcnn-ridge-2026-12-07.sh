#!/usr/bin/env bash
# Session 36 (issue 14): R-CNN's box regressors retrained with other ridge lambdas on finished
# runs (session 29 did this for SPP-net: lambda 100 instead of the paper's 4000). A copy of each
# run links everything but bbox.safetensors, results-* and config.yaml; its config gets the new
# ridge, and `sppnet train detect --resume` runs only the box-regression stage again; then tested.
#
#   PAIRS="/runs/rcnn-0:/data/det-0 /runs/rcnn-1:/data/det-1" OUT=/tmp/ridge RIDGES="250 100" \
#     PY=.venv/bin/python SRC=src bash benchmarks/results/rcnn-ridge-2026-12-07.sh
#
# Appends "RUN ridge R MAP" lines to OUT/ridge.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT}; PAIRS=${PAIRS:?set PAIRS}
SRC=${SRC:-$PWD/src}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
for pair in $PAIRS; do
  run=${pair%%:*}; data=${pair#*:}
  for R in ${RIDGES:-250 100}; do
    copy=$OUT/$(basename "$run")-ridge$R
    rm -rf "$copy"; mkdir -p "$copy"
    for f in "$run"/*; do
      case $(basename "$f") in bbox.safetensors|results-*|config.yaml) ;; *) ln -s "$f" "$copy/" ;; esac
    done
    sed "s/^  ridge: .*/  ridge: $R.0/" "$run/config.yaml" > "$copy/config.yaml"
    PYTHONPATH=$SRC $PY -m sppnet train detect --method rcnn --data "$data" --out "$copy" --resume > "$copy.log" 2>&1
    PYTHONPATH=$SRC $PY -m sppnet eval detect --run "$copy" --data "$data" --split test --json "$copy.json" >> "$copy.log" 2>&1
    $PY -c "import json; print('$(basename "$run") ridge $R', round(100 * json.load(open('$copy.json'))['map'], 2))" >> "$OUT/ridge.txt"
  done
done
