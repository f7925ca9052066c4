"""Fuzzing the readers with hypothesis: whatever an annotation file, split
file or image file holds, reading it gives a record or a reported skip, never
a crash. ``read_voc`` may raise only for the split as a whole (``ValueError``:
no usable image, no object classes; documented in ``sppnet.data.voc``); the
image functions raise only ``ImageError``.
"""

from __future__ import annotations

import io
import math
from xml.sax.saxutils import escape

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from sppnet.data.images import ImageError, checked_image_size, image_size, load_image
from sppnet.data.records import BACKGROUND
from sppnet.data.voc import read_voc, write_voc_split

# derandomize: the same examples on every machine and run (a CI run must not find
# what the last one did not); new inputs get their own regression tests.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
WIDTH, HEIGHT = 40, 30
CLASSES = ("cat", "dog")

# XML 1.0 cannot hold control characters or lone surrogates: the well-formed
# documents use text without them (the mutated ones have everything).
xml_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)

numbers = st.one_of(
    st.integers(-5, 60).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1e308", "1e-320", "9" * 400, "-0", "0x10",
                     "1_000", "\u0661\u0662", "", " ", "1 2", "12abc", "\u00bd", "1e", "+5", ".5", "5."]),
    xml_text,
)
names = st.one_of(
    st.sampled_from([*CLASSES, BACKGROUND, " cat ", "Cat", "unicorn", "", "caf\u00e9", "\u732b", "a\tb"]),
    xml_text,
)
flags = st.one_of(st.sampled_from(["0", "1", "2", "-1", "inf", "nan", "1e400", "yes", ""]), xml_text)


@st.composite
def objects(draw):
    parts = []
    if draw(st.integers(0, 9)):
        parts.append(f"<name>{escape(draw(names))}</name>")
    for tag in ("pose", "truncated", "difficult"):
        if draw(st.booleans()):
            parts.append(f"<{tag}>{escape(draw(flags))}</{tag}>")
    if draw(st.integers(0, 9)):
        box = "".join(f"<{tag}>{escape(draw(numbers))}</{tag}>" for tag in ("xmin", "ymin", "xmax", "ymax")
                      if draw(st.integers(0, 9)))
        parts.append(f"<bndbox>{box}</bndbox>")
    if draw(st.booleans()):
        parts.append(f"<extra attr='1'>{escape(draw(xml_text))}<deeper/></extra>")
    draw(st.randoms()).shuffle(parts)
    return f"<object>{''.join(parts)}</object>"


@st.composite
def annotations(draw):
    """Well-formed annotation XML: random fields, numbers, names, tags."""
    parts = []
    if draw(st.booleans()):
        parts.append(f"<filename>{escape(draw(st.one_of(st.sampled_from(['img.jpg', 'other.jpg', '..', '/', '../img.jpg', 'a' * 300 + '.jpg']), xml_text)))}</filename>")
    if draw(st.booleans()):
        size = "".join(f"<{tag}>{escape(draw(st.one_of(st.just(str(v)), numbers)))}</{tag}>"
                       for tag, v in (("width", WIDTH), ("height", HEIGHT)) if draw(st.integers(0, 5)))
        parts.append(f"<size>{size}<depth>3</depth></size>")
    parts += draw(st.lists(objects(), max_size=5))
    root = draw(st.sampled_from(["annotation", "annotation", "Annotation", "root"]))
    return f"<{root}>{''.join(parts)}</{root}>"


@st.composite
def mutated(draw, text):
    """``text`` with a few random edits: cuts, insertions, swaps of bytes."""
    data = bytearray(text.encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "insert", "delete", "replace"]))
        at = draw(st.integers(0, len(data)))
        if kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.one_of(st.binary(max_size=6), st.sampled_from(
                [b"<", b">", b"&", b"&amp;", b"<!DOCTYPE x [<!ENTITY a 'b'>]>", b"<![CDATA[x]]>", b"\xff\xfe", b"\x00"])))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


xml_files = st.sampled_from(["good"] * 5 + ["mutated"] * 3 + ["raw", "special", "special"]).flatmap(lambda kind: {
    "good": annotations().map(lambda text: text.encode("utf-8")),
    "mutated": annotations().flatmap(mutated),
    "raw": st.binary(max_size=64),
    "special": st.sampled_from(SPECIAL_FILES),
}[kind])
SPECIAL_FILES = [
        b"", b"<?xml version='1.0' encoding='no-such-codec'?><annotation/>",
        b"<?xml version='1.0' encoding='utf-16'?><annotation/>",
        b"<!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><annotation>&e;</annotation>",
        b"<!DOCTYPE a [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]><annotation><object><name>&b;</name></object></annotation>",
        b"<annotation>" + b"<x>" * 2000 + b"</x>" * 2000 + b"</annotation>",
]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-voc")
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 128, np.uint8)).save(root / "JPEGImages" / "img.jpg")
    # a good image beside the fuzzed one: the split always has something usable
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 64, np.uint8)).save(root / "JPEGImages" / "good.jpg")
    (root / "Annotations" / "good.xml").write_text(
        f"<annotation><size><width>{WIDTH}</width><height>{HEIGHT}</height></size><object><name>cat</name>"
        "<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object></annotation>")
    return root


def _check_dataset(data, classes):
    assert data.classes[0] == BACKGROUND and len(data.images) >= 1
    for record in data.images:
        boxes = record.boxes
        g = record.num_objects
        assert boxes.dtype == torch.float32 and boxes.shape == (g, 4)
        assert record.labels.shape == record.difficult.shape == record.truncated.shape == (g,)
        assert bool(torch.isfinite(boxes).all()) and bool((boxes[:, 2:] > boxes[:, :2]).all())
        assert bool((boxes[:, :2] >= 0).all())
        assert bool((boxes[:, 2] <= record.width).all()) and bool((boxes[:, 3] <= record.height).all())
        assert bool((record.labels >= 1).all()) and bool((record.labels < data.num_classes).all())
        if classes is not None:
            assert data.classes == (BACKGROUND, *classes)
    for skipped in data.skipped:
        assert str(skipped.path).startswith(str(data.root)) and skipped.reason


@FUZZ
@given(xml=xml_files, classes=st.sampled_from([CLASSES, None]), check_images=st.booleans(),
       extra_ids=st.lists(st.one_of(st.sampled_from(["../x", "/abs", "a/../../b", "b" * 300, "img", "nope"]),
                                    st.text(min_size=1, max_size=8)), max_size=2))
def test_read_voc_gives_records_or_reported_skips(voc_root, xml, classes, check_images, extra_ids):
    (voc_root / "Annotations" / "img.xml").write_bytes(xml)
    write_voc_split(voc_root, "fuzz", ["good", "img", *extra_ids])
    data = read_voc(voc_root, "fuzz", classes, check_images=check_images)
    _check_dataset(data, classes)
    ids = [r.image_id for r in data.images]
    assert ids[0] == "good" and data.images[0].boxes.tolist() == [[1.0, 2.0, 20.0, 25.0]]
    fuzzed = [s for s in data.skipped if s.path.name == "img.xml"]
    # the fuzzed file gives a record, or is reported (or both: a record that lost bad objects)
    assert "img" in ids or any(s.reason.endswith("image skipped") for s in fuzzed), data.skipped
    event("image kept" if "img" in ids else "image skipped")
    event(f"{len(fuzzed)} report(s) on it")


OBJECT = "<object><name>{name}</name><difficult>{flag}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>" \
         "<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"


@pytest.mark.parametrize("xml, reason", [
    # each of these once escaped read_voc as OverflowError, OSError or LookupError,
    # or gave a box or label that breaks the record's contract
    (OBJECT.format(name="cat", flag="inf", x1=1, y1=1, x2=9, y2=9), "<difficult> is not 0 or 1: 'inf'"),
    (OBJECT.format(name=BACKGROUND, flag=0, x1=1, y1=1, x2=9, y2=9), "reserved for the background"),
    (OBJECT.format(name="cat", flag=0, x1=0, y1=0, x2=1, y2="1e-300"), "thinner than float32 precision"),
    ("<filename>" + "a" * 300 + ".jpg</filename>" + OBJECT.format(name="cat", flag=0, x1=1, y1=1, x2=9, y2=9), None),
])
def test_reader_regressions_found_by_fuzzing(voc_root, xml, reason):
    (voc_root / "Annotations" / "img.xml").write_text(f"<annotation>{xml}</annotation>")
    write_voc_split(voc_root, "regression", ["good", "img"])
    data = read_voc(voc_root, "regression", CLASSES)
    _check_dataset(data, CLASSES)
    assert [r.image_id for r in data.images] == ["good", "img"]
    if reason is None:  # the over-long <filename> falls back to <id>.jpg
        assert data.images[1].num_objects == 1 and data.skipped == []
    else:
        assert data.images[1].num_objects == 0 and len(data.skipped) == 1 and reason in data.skipped[0].reason


def test_reader_regressions_of_the_split_and_the_xml_declaration(voc_root):
    (voc_root / "Annotations" / "img.xml").write_bytes(b"<?xml version='1.0' encoding='no-such-codec'?><annotation/>")
    write_voc_split(voc_root, "regression", ["good", "img", "b" * 300, "good"])
    data = read_voc(voc_root, "regression", CLASSES)
    assert [r.image_id for r in data.images] == ["good"]
    reasons = [str(s) for s in data.skipped]
    assert len(reasons) == 3, reasons
    assert "img.xml: malformed XML (unknown encoding: no-such-codec)" in reasons[0]
    assert "File name too long" in reasons[1] and "regression.txt: image id 'good' is listed more than once" in reasons[2]


# ----------------------------------------------------------------------------- image bytes


def _encoded(fmt: str, seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (12, 17, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format=fmt)
    return out.getvalue()


VALID = {fmt: _encoded(fmt, i) for i, fmt in enumerate(["JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"])}


@st.composite
def image_bytes(draw):
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "garbage"]))
        at = draw(st.integers(0, len(data)))
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data = bytearray(draw(st.binary(max_size=40)))
    return bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's notes on the corrupt files it is handed
@FUZZ
@given(data=image_bytes(), suffix=st.sampled_from([".jpg", ".png", ".bin"]))
def test_image_functions_raise_only_image_error(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    outcomes = []
    for function in (image_size, checked_image_size, load_image):
        try:
            outcomes.append(function(path, max_pixels=10_000))
        except ImageError as error:
            assert str(path) in str(error)
            outcomes.append(None)
    size, checked, array = outcomes
    if array is not None:  # what decodes has the size the header promised, and was accepted by the check
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
        assert checked == size == array.shape[:2]
    if checked is not None:
        assert size == checked
    event("decoded" if array is not None else "header only" if size is not None else "refused")


def test_checked_image_size_finds_truncation_the_header_misses(tmp_path):
    jpeg = VALID["JPEG"]
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg[: len(jpeg) - 20])
    assert image_size(cut) == (12, 17)
    with pytest.raises(ImageError, match="cut.jpg: cannot decode"):
        checked_image_size(cut)
    padded = tmp_path / "padded.jpg"  # bytes after the end marker: decoded in full, and fine
    padded.write_bytes(jpeg + b"\0" * 10)
    assert checked_image_size(padded) == (12, 17)
    assert math.prod(load_image(padded).shape) == 12 * 17 * 3


def test_a_truncated_png_header_is_an_image_error(tmp_path):
    """Found by the fuzz test: PIL raises ValueError ("Truncated IHDR chunk")
    for a PNG whose IHDR chunk is shorter than 13 bytes."""
    import struct
    import zlib

    ihdr = b"\x00\x00\x00\x11\x00\x00"
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path = tmp_path / "short-header.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    for function in (image_size, load_image):
        with pytest.raises(ImageError, match="short-header.png: not a readable image"):
            function(path)
