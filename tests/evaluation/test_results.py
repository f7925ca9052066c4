"""The devkit results folder: literal lines, round trip and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sppnet.data.records import BACKGROUND, DetectionDataset, ImageRecord
from sppnet.evaluation import Detections, evaluate_detections, read_voc_results, write_voc_results

CLASSES = (BACKGROUND, "cat", "dog", "bird")


def test_written_line_is_one_based(tmp_path):
    # Continuous (0, 1, 10, 20.5) -> devkit (1, 2, 10, 20.5).
    d = Detections(["000001"], torch.tensor([0.9]), torch.tensor([[0.0, 1.0, 10.0, 20.5]]))
    paths = write_voc_results({1: d}, CLASSES, "test", tmp_path)
    assert paths == [tmp_path / f"comp4_det_test_{c}.txt" for c in CLASSES[1:]]
    assert (tmp_path / "comp4_det_test_cat.txt").read_text() == "000001 0.900000 1.0 2.0 10.0 20.5\n"
    assert (tmp_path / "comp4_det_test_dog.txt").read_text() == ""  # every class gets a file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    per_class = {}
    for k, n in ((1, 7), (2, 0), (3, 12)):
        xy = torch.randint(0, 300, (n, 2), generator=g).double() / 2  # multiples of 0.5: exact in %.1f
        wh = torch.randint(1, 200, (n, 2), generator=g).double() / 2
        boxes = torch.cat([xy, xy + wh], dim=1)
        scores = torch.rand(n, generator=g, dtype=torch.float64)
        ids = [f"img_{int(i):04d}" for i in torch.randint(0, 5, (n,), generator=g)]
        per_class[k] = Detections(ids, scores, boxes)
    write_voc_results(per_class, CLASSES, "val", tmp_path, prefix="comp3")
    back = read_voc_results(tmp_path, CLASSES, "val", prefix="comp3")
    assert sorted(back) == [1, 2, 3]
    for k, d in per_class.items():
        assert back[k].image_ids == d.image_ids
        torch.testing.assert_close(back[k].boxes, d.boxes, rtol=0, atol=0, check_dtype=False)
        torch.testing.assert_close(back[k].scores, d.scores, rtol=0, atol=5e-7, check_dtype=False)
    # And the file holds the 1-based values: x1 + 1, y1 + 1, x2, y2.
    first = (tmp_path / "comp3_det_val_cat.txt").read_text().splitlines()[0].split()
    b = per_class[1].boxes[0].tolist()
    assert [float(v) for v in first[2:]] == [b[0] + 1, b[1] + 1, b[2], b[3]]


def test_evaluation_survives_the_round_trip(tmp_path):
    rec = ImageRecord("a", Path("a.jpg"), 50, 50, boxes=torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
                      labels=torch.tensor([1, 2]), difficult=torch.tensor([False, False]),
                      truncated=torch.tensor([False, False]))
    ds = DetectionDataset(Path("."), "test", CLASSES, [rec])
    per_class = {
        1: Detections(["a", "a"], torch.tensor([0.5, 0.25]), torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 10]])),
        2: Detections(["a"], torch.tensor([0.75]), torch.tensor([[20.0, 20, 30, 30]])),
    }
    write_voc_results(per_class, CLASSES, "test", tmp_path)
    before = evaluate_detections(per_class, ds, "voc12").to_json()
    after = evaluate_detections(read_voc_results(tmp_path, CLASSES, "test"), ds, "voc12").to_json()
    assert before == after
    assert after["ap"]["cat"] == 1.0 and after["ap"]["dog"] == 1.0


def test_missing_files(tmp_path):
    (tmp_path / "comp4_det_test_dog.txt").write_text("x 0.5 1 1 10 10\n\n")
    out = read_voc_results(tmp_path, CLASSES, "test")
    assert len(out[1]) == 0 and len(out[3]) == 0
    assert out[2].boxes.tolist() == [[0.0, 0.0, 10.0, 10.0]]
    with pytest.raises(FileNotFoundError, match=r"comp4_det_train_<class>\.txt"):
        read_voc_results(tmp_path, CLASSES, "train")
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_voc_results(missing, CLASSES, "test")


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("a 0.5 1 1 10", "6 fields"),
        ("a 0.5 1 1 10 10 7", "6 fields"),
        ("a high 1 1 10 10", "numbers"),
        ("a nan 1 1 10 10", "NaN or infinite"),
        ("a 0.5 1 1 inf 10", "NaN or infinite"),
        ("a 0.5 20 1 10 10", "x2 < x1"),
    ],
)
def test_malformed_lines(tmp_path, bad_line, message):
    path = tmp_path / "comp4_det_test_cat.txt"
    path.write_text(f"ok 0.9 1 1 5 5\n{bad_line}\n")
    with pytest.raises(ValueError, match=message) as info:
        read_voc_results(tmp_path, CLASSES, "test")
    assert "comp4_det_test_cat.txt:2" in str(info.value)


def test_write_errors(tmp_path):
    d = Detections(["has space"], torch.tensor([0.9]), torch.tensor([[0.0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="whitespace"):
        write_voc_results({1: d}, CLASSES, "test", tmp_path)
    with pytest.raises(ValueError, match="__background__"):
        write_voc_results({}, CLASSES[1:], "test", tmp_path)
    with pytest.raises(ValueError, match="labels"):
        write_voc_results({4: Detections.empty()}, CLASSES, "test", tmp_path)
