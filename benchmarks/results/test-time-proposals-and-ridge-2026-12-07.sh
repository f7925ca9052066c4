#!/usr/bin/env bash
# Session 29 (issue 14): two changes checked on trained preset runs, weights unchanged.
#
# 1. Proposals down to 8 px a side at test time (`proposal_min_size: 8`; the presets keep 16):
#    every run tested again with and without it (benchmarks/retest.py, paired).
# 2. SPP-net's box regressors retrained with another ridge lambda (the preset: 4000): a copy of the
#    run that links everything but bbox.safetensors and config.yaml, resumed (only the box regression
#    stage runs again), then tested.
#
#   RUNS="spp:/runs/set-0/spp rcnn:/runs/set-0/rcnn fr:/runs/set-0/fr" DATA=/data/det-0 OUT=/tmp/check \
#     RIDGES="4000 250 100" bash benchmarks/results/test-time-proposals-and-ridge-2026-12-07.sh
#
# RUNS: NAME:RUN pairs trained on DATA; the ridge part takes the runs named spp (SPP-net).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT}; DATA=${DATA:?set DATA}; RUNS=${RUNS:?set RUNS}
mkdir -p "$OUT"
for pair in $RUNS; do
  name=${pair%%:*}; run=${pair#*:}
  for edit in "{}" "{proposal_min_size: 8}"; do
    tag=$( [ "$edit" = "{}" ] && echo base || echo min8 )
    .venv/bin/python benchmarks/retest.py "$run" "$DATA" "$OUT/$name-$tag" "$edit" 2>&1 | tail -1
  done
  [ "$name" = spp ] || continue
  for R in ${RIDGES:-4000 1000 500 250 100}; do
    copy=$OUT/$name-ridge$R
    rm -rf "$copy"; mkdir -p "$copy"
    for f in "$run"/*; do
      case $(basename "$f") in bbox.safetensors|results-*|config.yaml) ;; *) ln -s "$f" "$copy/" ;; esac
    done
    sed "s/^  ridge: .*/  ridge: $R.0/" "$run/config.yaml" > "$copy/config.yaml"
    .venv/bin/python -m sppnet train detect --method sppnet --data "$DATA" --out "$copy" --resume > "$copy.log" 2>&1
    .venv/bin/python -m sppnet eval detect --run "$copy" --data "$DATA" --split test --json "$copy.json" >> "$copy.log" 2>&1
    python3 -c "import json; print('$copy ridge $R', round(100 * json.load(open('$copy.json'))['map'], 1))"
  done
done
