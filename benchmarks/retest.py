"""Test a trained detector run again with other test settings, weights unchanged.

    python benchmarks/retest.py RUN DATA OUT '{scales: [192, 384], window_target: 160}'

The edits (a YAML mapping) go to the run config's top level or its ``test``
section, in a view of the run under ``OUT/view`` (``ablations.view``: links
to the weights, an edited config.yaml); ``sppnet eval detect`` then scores it
on DATA's test split (``OUT/view.json``, results in ``OUT/results-view``).
Prints OUT, the edits and the VOC07 mAP in %.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import evaluate, view  # noqa: E402


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    run, data, out, edits = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    result = evaluate(view(run, out / "view", yaml.safe_load(edits)), data, out, "view", [])
    print(out, edits, round(100 * result["map"], 1), flush=True)


if __name__ == "__main__":
    main()
