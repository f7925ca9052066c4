"""Session 34 (issue 14): SPP-net runs tested again with NMS over the regressed
windows (`test.regress_first`) and one step of iterative localisation
(`test.refine N`), weights unchanged.

    PYTHONPATH=src python benchmarks/results/refine-2026-12-07.py OUT NAME RUN DATA [RUN DATA ...]

For each run (tested on its DATA's test split) and each variant below, a view
of the run (``ablations.view``: links to the weights, the config's test
section edited) is scored by ``sppnet eval detect``; one JSON line per
evaluation is appended to OUT/refine.jsonl (those there are skipped): NAME, the run, the edits, VOC07
mAP and AP per class (%), and the evaluation's wall seconds (conv5 maps
cached in the run, so the seconds are pooling, fc layers and NMS).

Session 36: R-CNN runs too (their windows warped and scored again: the seconds
are whole-network passes); VARIANTS="preset refine-20 ..." (an environment
variable) tests only those variants.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ablations import evaluate, view  # noqa: E402

VARIANTS = {
    "preset": {},
    "regress-first": {"regress_first": True},
    "refine-20": {"refine": 20},
    "refine-50": {"refine": 50},
    "refine-10-regress-first": {"refine": 10, "regress_first": True},
    "refine-20-regress-first": {"refine": 20, "regress_first": True},
    "refine-50-regress-first": {"refine": 50, "regress_first": True},
    "refine-100-regress-first": {"refine": 100, "regress_first": True},
}


def main() -> None:
    if len(sys.argv) < 5 or len(sys.argv) % 2 == 0:
        sys.exit(__doc__)
    out, name, pairs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    chosen = os.environ.get("VARIANTS", "").split() or list(VARIANTS)
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown VARIANTS {sorted(unknown)}; choose from {list(VARIANTS)}")
    out.mkdir(parents=True, exist_ok=True)
    lines = out / "refine.jsonl"
    done = {(r["name"], r["run"], r["variant"]) for r in map(json.loads, lines.read_text().splitlines())} \
        if lines.is_file() else set()
    for run, data in zip(pairs[::2], pairs[1::2]):
        run, data = Path(run), Path(data)
        for variant in chosen:
            edits = VARIANTS[variant]
            if (name, str(run), variant) in done:
                continue
            folder = out / f"{name}-{run.parent.name}-{run.name}-{variant}"
            started = time.perf_counter()
            result = evaluate(view(run, folder / "view", edits), data, folder, "view", [])
            line = {"name": name, "run": str(run), "variant": variant, "edits": edits,
                    "map": round(100 * result["map"], 2),
                    "ap": {k: round(100 * v, 2) for k, v in result["ap"].items()},
                    "seconds": round(time.perf_counter() - started, 1)}
            with open(lines, "a") as handle:
                handle.write(json.dumps(line) + "\n")
            print(name, run.name, variant, line["map"], line["seconds"], flush=True)


if __name__ == "__main__":
    main()
