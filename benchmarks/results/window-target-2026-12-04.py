"""SPP-net's window_target at test time on trained runs (RESULTS.md, session 6).

    python benchmarks/results/window-target-2026-12-04.py OUT 'RUNS/run{seed}' 'DATA_ROOT/data-heldout-{seed}-300-100'

Each variant is a view of the run (``ablations.view``: its weights linked, one
setting of config.yaml changed) evaluated with ``sppnet eval detect``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ablations import evaluate, view  # noqa: E402

VARIANTS = {"target 64": {"window_target": 64.0}, "target 128": {"window_target": 128.0},
            "target 128 + 1400": {"window_target": 128.0, "scales": [192, 384, 640, 1024, 1400]},
            "target 160": {"window_target": 160.0}, "target 224": {"window_target": 224.0}}

out, runs, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for seed in (0, 1, 2):
    for name, edits in VARIANTS.items():
        folder = out / f"seed-{seed}"
        run = view(Path(runs.format(seed=seed)), folder / name.replace(" ", "_").replace("+", "p"), edits)
        result = evaluate(run, Path(data.format(seed=seed)), folder / "evals", name, [])
        print(seed, name, round(100 * result["map"], 1), flush=True)
