"""The README's tour runs as written (its first block: the SPP layer and op)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    tour = text[text.index("## A short tour"):]
    tour = tour[: tour.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", tour, flags=re.S)


def test_the_tours_spp_block_runs_and_gives_the_shapes_it_states():
    blocks = tour_blocks()
    assert len(blocks) >= 2, "the tour lost its python blocks"
    scope: dict = {}
    exec(compile(blocks[0], "README.md (tour)", "exec"), scope)
    assert tuple(scope["conv5"].shape) == (1, 256, 42, 56)  # the comment beside it says so
    assert tuple(scope["pooled"].shape) == (1, 12800)
    assert tuple(scope["whole"].shape) == (1, 12800)
    for line in blocks[0].splitlines():  # every "# (a, b, ...)" comment is the shape the line gives
        stated = re.search(r"#\s*(\([0-9, ]+\))", line)
        name = line.split("=")[0].strip()
        if stated and name in scope:
            assert str(tuple(scope[name].shape)) == stated.group(1).replace(" ", "").replace(",", ", "), line


def test_the_tours_detector_block_names_real_functions():
    # The second block needs a trained run; what it imports and calls must exist.
    from sppnet.engine.detectors import load_detector
    from sppnet.engine.fast_rcnn import image_tensor

    block = tour_blocks()[1]
    assert "load_detector(" in block and "image_tensor(" in block
    assert callable(load_detector) and callable(image_tensor)
