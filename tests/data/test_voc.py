import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.data.records import BACKGROUND, VOC_CLASSES, ImageRecord
from sppnet.data.voc import read_voc, resolve_classes, write_voc_annotation, write_voc_split

XML = """<annotation>
  <folder>VOC2007</folder><filename>{id}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
OBJ = """<object><name>{name}</name><pose>Left</pose><truncated>{t}</truncated><difficult>{d}</difficult>
  <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def make_voc(root, images, split="trainval"):
    """images: {id: (w, h, [(name, x1, y1, x2, y2, difficult, truncated)] or raw xml text)}"""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    for image_id, (w, h, objects) in images.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        if isinstance(objects, str):
            text = objects
        else:
            text = XML.format(id=image_id, w=w, h=h, objects="".join(
                OBJ.format(name=n, x1=a, y1=b, x2=c, y2=d, d=dd, t=t) for n, a, b, c, d, dd, t in objects))
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
    write_voc_split(root, split, list(images))


def test_reads_real_voc_files_with_one_based_conversion(tmp_path):
    make_voc(tmp_path, {
        "000005": (500, 375, [("chair", 263, 211, 324, 339, 0, 0), ("chair", 5, 244, 67, 374, 0, 1),
                              ("chair", 277, 186, 312, 220, 1, 0)]),
        "000007": (500, 333, [("car", 141, 50, 500, 330, 0, 1)]),
    })
    data = read_voc(tmp_path, "trainval", classes="voc")
    assert data.classes == (BACKGROUND, *VOC_CLASSES) and data.num_classes == 21
    first = data.images[0]
    assert (first.image_id, first.width, first.height) == ("000005", 500, 375)
    # 1-based inclusive (263..324) -> 0-based continuous [262, 324): width 62 pixels
    assert first.boxes.tolist()[0] == [262.0, 210.0, 324.0, 339.0]
    assert first.labels.tolist() == [VOC_CLASSES.index("chair") + 1] * 3
    assert first.difficult.tolist() == [False, False, True] and first.truncated.tolist() == [False, True, False]
    assert data.images[1].boxes.tolist() == [[140.0, 49.0, 500.0, 330.0]]
    assert data.skipped == []


def test_classes_from_data_are_sorted_and_background_first(tmp_path):
    make_voc(tmp_path, {"a": (50, 40, [("zebra", 1, 1, 10, 10, 0, 0), ("ant", 5, 5, 20, 20, 0, 0)])})
    data = read_voc(tmp_path, "trainval")
    assert data.classes == (BACKGROUND, "ant", "zebra")
    assert data.images[0].labels.tolist() == [2, 1]


def test_bad_objects_are_reported_and_skipped_not_fatal(tmp_path):
    make_voc(tmp_path, {
        "img": (100, 80, [("cat", 10, 10, 5, 30, 0, 0),      # inverted
                          ("unicorn", 1, 1, 10, 10, 0, 0),  # unknown class
                          ("dog", 90, 70, 120, 95, 0, 0),   # reaches outside: clipped
                          ("dog", 200, 200, 220, 220, 0, 0),  # entirely outside
                          ("cat", 1, 1, 100, 80, 0, 0)]),
        "broken": (60, 60, "<annotation><object><name>cat</name"),
        "nosize": (60, 60, "<annotation><object><name>cat</name><bndbox><xmin>a</xmin></bndbox></object></annotation>"),
    })
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("img\nbroken\nnosize\nmissing\n../escape\n")
    data = read_voc(tmp_path, "trainval", classes=["cat", "dog"])
    assert [r.image_id for r in data.images] == ["img", "nosize"]
    assert data.images[0].boxes.tolist() == [[89.0, 69.0, 100.0, 80.0], [0.0, 0.0, 100.0, 80.0]]
    reasons = "\n".join(str(s) for s in data.skipped)
    for expected in ("object 0 (cat): inverted or empty box", "object 1: unknown class 'unicorn'",
                     "object 2 (dog): box reaches outside the 100 x 80 image; clipped",
                     "object 3 (dog): box lies outside", "broken.xml: malformed XML",
                     "nosize.xml: object 0: <xmin> is not a number", "missing.xml: annotation file not found",
                     "points outside the dataset root"):
        assert expected in reasons, expected


def test_split_errors(tmp_path):
    make_voc(tmp_path, {"a": (20, 20, [])})
    with pytest.raises(FileNotFoundError, match="test.txt"):
        read_voc(tmp_path, "test", classes="voc")
    write_voc_split(tmp_path, "empty", [])
    with pytest.raises(ValueError, match="is empty"):
        read_voc(tmp_path, "empty", classes="voc")
    with pytest.raises(ValueError, match="no object classes"):
        read_voc(tmp_path, "trainval")
    with pytest.raises(ValueError, match="unknown class preset"):
        resolve_classes("coco")


def test_writer_round_trips_through_the_reader(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((60, 90, 3), np.uint8)).save(tmp_path / "JPEGImages" / "x.jpg")
    classes = (BACKGROUND, "cat", "dog")
    record = ImageRecord("x", tmp_path / "JPEGImages" / "x.jpg", 90, 60,
                         boxes=torch.tensor([[0.0, 0.0, 90.0, 60.0], [10.0, 20.0, 31.0, 42.0]]),
                         labels=torch.tensor([2, 1]), difficult=torch.tensor([False, True]),
                         truncated=torch.tensor([True, False]))
    xml = write_voc_annotation(tmp_path, record, classes).read_text()
    assert "<xmin>1</xmin>" in xml and "<xmax>90</xmax>" in xml and "<xmin>11</xmin>" in xml
    write_voc_split(tmp_path, "all", ["x"])
    back = read_voc(tmp_path, "all", classes=["cat", "dog"]).images[0]
    assert torch.equal(back.boxes, record.boxes) and torch.equal(back.labels, record.labels)
    assert torch.equal(back.difficult, record.difficult) and torch.equal(back.truncated, record.truncated)
