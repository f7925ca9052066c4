"""Tests for sppnet.proposals on small generated images."""

from __future__ import annotations

import errno
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from sppnet.atomic import DiskFullError
from sppnet.hashing import file_sha256
from sppnet.proposals import cache as P_cache, methods as P_methods
from sppnet.proposals import (
    ProposalCache,
    ProposalConfig,
    compute_proposals,
    propose,
    proposal_recall,
    safe_file_name,
)
from sppnet.data.records import ImageRecord
from tests.faults import file_size_limit

SS_FAST = ProposalConfig(method="selective-search-fast", resize_to=None)
COLOURS = ((220, 40, 40), (40, 200, 60), (30, 60, 220), (230, 220, 40))

# Solid rectangles (x1, y1, x2, y2), continuous pixels: columns x1..x2-1 are filled.
LAYOUTS = (
    ((10, 15, 60, 55), (80, 20, 150, 70), (40, 70, 110, 110)),
    ((5, 5, 45, 100), (60, 10, 150, 50), (70, 65, 130, 115)),
    ((20, 30, 140, 60), (30, 75, 70, 115), (100, 72, 155, 112)),
)


def make_image(rects, seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.clip(128 + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    for (x1, y1, x2, y2), colour in zip(rects, COLOURS):
        image[y1:y2, x1:x2] = colour
    return image


def write_dataset(folder: Path, n: int = 3) -> list[ImageRecord]:
    records = []
    for i in range(n):
        rects = LAYOUTS[i % len(LAYOUTS)]
        path = folder / f"img{i}.png"
        Image.fromarray(make_image(rects, seed=i)).save(path)
        records.append(
            ImageRecord(
                image_id=f"set/img{i}",  # ids may contain '/'
                image_path=path,
                width=160,
                height=120,
                boxes=torch.tensor(rects, dtype=torch.float32),
                labels=torch.ones(len(rects), dtype=torch.int64),
                difficult=torch.zeros(len(rects), dtype=torch.bool),
                truncated=torch.zeros(len(rects), dtype=torch.bool),
            )
        )
    return records


def check_valid(boxes: torch.Tensor, width: int, height: int, config: ProposalConfig) -> None:
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert 0 < boxes.shape[0] <= config.max_proposals
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] - boxes[:, 0] >= config.min_size).all()
    assert (boxes[:, 3] - boxes[:, 1] >= config.min_size).all()
    assert torch.unique(boxes, dim=0).shape[0] == boxes.shape[0]


def best_iou(rects, boxes: torch.Tensor) -> torch.Tensor:
    return box_iou(torch.tensor(rects, dtype=torch.float32), boxes).max(dim=1).values


# ----------------------------------------------------------------------------- config


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="selective-search-fast.*grid"):
        ProposalConfig(method="sliding")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_proposals": 0},
        {"min_size": -1},
        {"resize_to": 0},
        {"grid_stride": 0.0},
        {"grid_scales": ()},
        {"grid_aspect_ratios": (1.0, -2.0)},
    ],
)
def test_invalid_values_rejected(kwargs):
    with pytest.raises(ValueError):
        ProposalConfig(**kwargs)


def test_edge_boxes_needs_user_supplied_model(tmp_path):
    with pytest.raises(ValueError, match="structured edge model file"):
        ProposalConfig(method="edge-boxes")
    missing = tmp_path / "model.yml.gz"
    with pytest.raises(FileNotFoundError, match="model.yml.gz") as info:
        ProposalConfig(method="edge-boxes", edge_model=missing)
    assert str(missing) in str(info.value) and "supply" in str(info.value)


def test_edge_boxes_with_a_bad_model_file_is_a_clear_error(tmp_path):
    model = tmp_path / "model.yml.gz"
    model.write_bytes(b"not a model")
    config = ProposalConfig(method="edge-boxes", edge_model=model)
    with pytest.raises(ValueError, match="model.yml.gz"):
        propose(make_image(LAYOUTS[0], seed=0), config)


class SobelEdgeDetector:
    """Stands in for OpenCV's structured edge detector (whose trained model the
    user supplies and the tests do not have): Sobel magnitude and orientation."""

    def detectEdges(self, image):  # noqa: N802 - OpenCV's names
        assert image.dtype == np.float32 and image.ndim == 3 and image.max() <= 1.0
        import cv2

        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
        magnitude = np.sqrt(gx * gx + gy * gy)
        return (magnitude / max(float(magnitude.max()), 1e-6)).astype(np.float32)

    def computeOrientation(self, edges):  # noqa: N802
        import cv2

        gx, gy = cv2.Sobel(edges, cv2.CV_32F, 1, 0), cv2.Sobel(edges, cv2.CV_32F, 0, 1)
        return np.mod(np.arctan2(gy, gx), np.pi).astype(np.float32)

    def edgesNms(self, edges, orientation):  # noqa: N802
        return edges


def test_edge_boxes_pipeline_with_a_stand_in_detector(tmp_path, monkeypatch):
    model = tmp_path / "model.yml.gz"
    model.write_bytes(b"stand-in")
    monkeypatch.setitem(P_methods._EDGE_DETECTORS, str(model), SobelEdgeDetector())
    rects = LAYOUTS[0]
    image = make_image(rects, seed=0)
    for resize_to in (None, 240):
        config = ProposalConfig(method="edge-boxes", edge_model=model, resize_to=resize_to, max_proposals=300)
        boxes = propose(image, config)
        check_valid(boxes, 160, 120, config)
        assert (best_iou(rects, boxes) >= 0.5).all(), resize_to
    key = ProposalConfig(method="edge-boxes", edge_model=model).key()
    model.write_bytes(b"another model")
    assert ProposalConfig(method="edge-boxes", edge_model=model).key() != key


def test_key_is_stable_and_covers_only_relevant_fields():
    assert ProposalConfig().key() == ProposalConfig().key()
    assert len(ProposalConfig().key()) == 12
    assert ProposalConfig(max_proposals=100).key() != ProposalConfig().key()
    assert ProposalConfig(resize_to=None).key() != ProposalConfig().key()
    assert ProposalConfig(method="selective-search-quality").key() != ProposalConfig().key()
    # grid settings do not change selective search, resize_to does not change the grid
    assert ProposalConfig(grid_stride=0.25).key() == ProposalConfig().key()
    assert ProposalConfig(method="grid", resize_to=None).key() == ProposalConfig(method="grid").key()
    assert ProposalConfig(method="grid", grid_stride=0.25).key() != ProposalConfig(method="grid").key()
    # lists are stored as tuples (the config stays hashable)
    assert ProposalConfig(method="grid", grid_scales=[0.5]).grid_scales == (0.5,)


def test_safe_file_name():
    assert safe_file_name("000005") == "000005"
    names = {safe_file_name(i) for i in ("a/b", "a_b", "a\\b", "../x", "", "é")}
    assert len(names) == 6
    for name in names:
        assert name and "/" not in name and "\\" not in name and not name.startswith(".")


# ----------------------------------------------------------------------------- propose


def test_selective_search_fast_finds_the_rectangles():
    ious = []
    for i, rects in enumerate(LAYOUTS):
        boxes = propose(make_image(rects, seed=i), SS_FAST)
        check_valid(boxes, 160, 120, SS_FAST)
        ious.append(best_iou(rects, boxes))
    ious = torch.cat(ious)
    assert (ious >= 0.5).double().mean() >= 0.9
    assert (ious >= 0.7).double().mean() >= 0.9


def test_selective_search_is_repeatable_and_capped():
    image = make_image(LAYOUTS[0], seed=0)
    a, b = propose(image, SS_FAST), propose(image, SS_FAST)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    capped = ProposalConfig(method="selective-search-fast", resize_to=None, max_proposals=5, min_size=0)
    few = propose(image, capped)
    assert few.shape[0] == 5
    # the method's ranking is kept: the first boxes of the uncapped list
    full = propose(image, ProposalConfig(method="selective-search-fast", resize_to=None, min_size=0))
    torch.testing.assert_close(few, full[:5], rtol=0, atol=0)


def test_selective_search_quality_runs():
    config = ProposalConfig(method="selective-search-quality", resize_to=None)
    boxes = propose(make_image(LAYOUTS[1], seed=1), config)
    check_valid(boxes, 160, 120, config)
    assert (best_iou(LAYOUTS[1], boxes) >= 0.7).all()


def test_resize_to_maps_boxes_back_to_original_pixels():
    rects = LAYOUTS[0]
    image = make_image(rects, seed=0)
    for resize_to in (None, 240, 80):
        config = ProposalConfig(method="selective-search-fast", resize_to=resize_to, min_size=8)
        boxes = propose(image, config)
        check_valid(boxes, 160, 120, config)
        # boxes left in the resized frame would be twice (or 2/3 times) too big
        assert (best_iou(rects, boxes) >= 0.7).all(), resize_to
    upscaled = propose(image, ProposalConfig(method="selective-search-fast", resize_to=240, min_size=8))
    assert upscaled[:, 2].max() > 150 and upscaled[:, 3].max() > 110  # reaches the far borders


def test_min_size_is_measured_in_original_pixels():
    image = make_image(LAYOUTS[0], seed=0)
    config = ProposalConfig(method="selective-search-fast", resize_to=480, min_size=30)  # 4x upscale
    boxes = propose(image, config)
    check_valid(boxes, 160, 120, config)


def test_detector_config_sets_the_minimum_box_size():
    """A 10 x 11 object: no box of 16 px or more a side reaches IoU 0.5 with it
    (at most 110 / 256), so only a detector config with a smaller minimum can
    propose it; the setting also names another proposal cache."""
    from sppnet.config import load_config
    from sppnet.engine.sppnet_detection import SPPNetConfig

    image = make_image(((70, 50, 80, 61),), seed=0)
    default = load_config(SPPNetConfig, "detect-sppnet-tiny", ["proposal_min_size=16"]).proposal_config
    smaller = load_config(SPPNetConfig, "detect-sppnet-tiny", ["proposal_min_size=8"]).proposal_config
    assert (default.min_size, smaller.min_size) == (16, 8) and default.key() != smaller.key()
    assert best_iou([(70, 50, 80, 61)], propose(image, default)).item() < 0.5
    assert best_iou([(70, 50, 80, 61)], propose(image, smaller)).item() >= 0.9


def test_propose_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        propose(np.zeros((10, 10, 3), np.float32), SS_FAST)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        propose(np.zeros((10, 10), np.uint8), SS_FAST)
    with pytest.raises(TypeError):
        propose(torch.zeros(10, 10, 3, dtype=torch.uint8), SS_FAST)


def test_tiny_image_gives_no_boxes_not_an_error():
    boxes = propose(np.full((5, 7, 3), 100, np.uint8), SS_FAST)
    assert boxes.shape == (0, 4) and boxes.dtype == torch.float32


# ----------------------------------------------------------------------------- grid


def expected_grid_count(width, height, scales, ratios, stride):
    total = 0
    for scale in scales:
        side = scale * min(width, height)
        for ratio in ratios:
            w = min(side / math.sqrt(ratio), width)
            h = min(side * math.sqrt(ratio), height)
            nx = math.ceil(round((width - w) / (stride * w), 9)) + 1
            ny = math.ceil(round((height - h) / (stride * h), 9)) + 1
            total += nx * ny
    return total


def test_grid_hand_worked_count():
    # 160 x 120, scale 0.25 -> 30 px squares with step 15: x in 0..130 -> ceil(130/15)+1 = 10
    # positions, y in 0..90 -> 7; scale 0.5 -> 60 px, step 30: 5 x 3. Total 70 + 15 = 85.
    config = ProposalConfig(
        method="grid", grid_scales=(0.25, 0.5), grid_aspect_ratios=(1.0,), grid_stride=0.5, min_size=0
    )
    boxes = propose(np.zeros((120, 160, 3), np.uint8), config)
    assert boxes.shape == (85, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 30.0, 30.0]))
    torch.testing.assert_close(boxes[69], torch.tensor([130.0, 90.0, 160.0, 120.0]))
    widths = boxes[:, 2] - boxes[:, 0]
    torch.testing.assert_close(widths[:70], torch.full((70,), 30.0))
    torch.testing.assert_close(widths[70:], torch.full((15,), 60.0))


def test_grid_count_formula_and_determinism():
    config = ProposalConfig(method="grid", max_proposals=100_000, min_size=0)
    for height, width in ((120, 160), (375, 500), (200, 90)):
        image = np.zeros((height, width, 3), np.uint8)
        boxes = propose(image, config)
        expected = expected_grid_count(width, height, config.grid_scales, config.grid_aspect_ratios, config.grid_stride)
        assert boxes.shape[0] == expected
        check_valid(boxes, width, height, config)
        torch.testing.assert_close(propose(image, config), boxes, rtol=0, atol=0)
        # every window covers the image evenly: the last column touches the right border
        assert boxes[:, 2].max() == width and boxes[:, 3].max() == height


def test_grid_default_is_about_2000_and_capped_evenly():
    image = np.zeros((375, 500, 3), np.uint8)
    full = propose(image, ProposalConfig(method="grid", max_proposals=100_000))
    assert 1500 <= full.shape[0] <= 2500
    capped = propose(image, ProposalConfig(method="grid", max_proposals=300))
    assert capped.shape[0] == 300
    # the subset spans every scale, not only the first ones
    areas = ((capped[:, 2] - capped[:, 0]) * (capped[:, 3] - capped[:, 1])).unique()
    assert areas.numel() >= 5


# ----------------------------------------------------------------------------- cache


def test_cache_store_and_lookup(tmp_path):
    cache = ProposalCache(tmp_path, SS_FAST)
    assert cache.folder == tmp_path / f"selective-search-fast-{SS_FAST.key()}"
    boxes = np.array([[0, 0, 10, 10], [1, 2, 30, 40]], np.float32)
    path = cache.store("a/b", boxes, "abc")
    assert path.parent == cache.folder and path.suffix == ".npz"
    got, reason = cache.lookup("a/b", "abc")
    assert reason is None and np.array_equal(got, boxes) and got.dtype == np.float32
    got, reason = cache.lookup("a/b", "other")
    assert got is None and "changed" in reason
    assert cache.lookup("a_b", "abc") == (None, None)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) >= {"boxes", "image_sha256", "config_key"}
        assert str(data["config_key"]) == SS_FAST.key()


def test_cache_write_is_atomic_and_cleans_up(tmp_path, monkeypatch):
    cache = ProposalCache(tmp_path, SS_FAST)
    cache.store("x", np.zeros((1, 4), np.float32), "h1")

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(P_cache.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        cache.store("x", np.ones((1, 4), np.float32), "h2")
    assert sorted(p.name for p in cache.folder.iterdir()) == ["x.npz"]  # no temp file left
    got, _ = cache.lookup("x", "h1")  # the old entry is intact
    assert np.array_equal(got, np.zeros((1, 4), np.float32))


def test_compute_proposals_reuses_and_invalidates(tmp_path):
    records = write_dataset(tmp_path, n=3)
    cache_root = tmp_path / "cache"
    first = compute_proposals(records, SS_FAST, cache_root, progress=False)
    assert (first.computed, first.reused, first.recomputed_stale, first.skipped) == (3, 0, 0, [])
    assert list(first.boxes) == [r.image_id for r in records]
    for record in records:
        check_valid(first.boxes[record.image_id], 160, 120, SS_FAST)
    folder = cache_root / f"selective-search-fast-{SS_FAST.key()}"
    assert len(list(folder.glob("*.npz"))) == 3
    assert not [p for p in folder.iterdir() if p.suffix != ".npz"]

    second = compute_proposals(records, SS_FAST, cache_root, progress=False)
    assert (second.computed, second.reused, second.recomputed_stale) == (0, 3, 0)
    for key in first.boxes:
        torch.testing.assert_close(second.boxes[key], first.boxes[key], rtol=0, atol=0)

    # the image changed: its entry is stale
    Image.fromarray(make_image(LAYOUTS[2], seed=7)).save(records[1].image_path)
    third = compute_proposals(records, SS_FAST, cache_root, progress=False)
    assert (third.computed, third.reused, third.recomputed_stale) == (1, 2, 1)
    assert (best_iou(LAYOUTS[2], third.boxes[records[1].image_id]) >= 0.7).all()

    # a truncated entry and a garbage entry are recomputed
    cache = ProposalCache(cache_root, SS_FAST)
    entry0 = cache.path_for(records[0].image_id)
    entry0.write_bytes(entry0.read_bytes()[:40])
    cache.path_for(records[2].image_id).write_bytes(b"garbage")
    fourth = compute_proposals(records, SS_FAST, cache_root, progress=False)
    assert (fourth.computed, fourth.reused, fourth.recomputed_stale) == (2, 1, 2)
    torch.testing.assert_close(fourth.boxes[records[0].image_id], first.boxes[records[0].image_id], rtol=0, atol=0)
    fifth = compute_proposals(records, SS_FAST, cache_root, progress=False)
    assert (fifth.computed, fifth.reused) == (0, 3)

    # another config: another folder, everything computed
    other = ProposalConfig(method="selective-search-fast", resize_to=None, max_proposals=10)
    sixth = compute_proposals(records, other, cache_root, progress=False)
    assert (sixth.computed, sixth.reused) == (3, 0)
    assert ProposalCache(cache_root, other).folder != folder
    assert all(b.shape[0] <= 10 for b in sixth.boxes.values())
    assert sixth.seconds >= 0


def test_entry_with_another_config_key_is_stale(tmp_path):
    records = write_dataset(tmp_path, n=1)
    cache_root = tmp_path / "cache"
    cache = ProposalCache(cache_root, SS_FAST)
    sha = file_sha256(records[0].image_path)
    path = cache.path_for(records[0].image_id)
    path.parent.mkdir(parents=True)
    np.savez(path, boxes=np.zeros((1, 4), np.float32), image_sha256=np.array(sha),
             config_key=np.array("000000000000"), image_id=np.array(records[0].image_id))
    run = compute_proposals(records, SS_FAST, cache_root, progress=False)
    assert (run.computed, run.reused, run.recomputed_stale) == (1, 0, 1)


def test_bad_images_are_skipped_and_reported(tmp_path):
    records = write_dataset(tmp_path, n=2)
    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"this is not an image")
    good_jpeg = tmp_path / "good.jpg"
    Image.fromarray(make_image(LAYOUTS[0], seed=3)).save(good_jpeg, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good_jpeg.read_bytes()[: good_jpeg.stat().st_size // 2])
    missing = tmp_path / "missing.png"
    bad = [
        ImageRecord(image_id=p.stem, image_path=p, width=160, height=120) for p in (not_image, truncated, missing)
    ]
    run = compute_proposals([records[0], *bad, records[1]], SS_FAST, tmp_path / "cache", progress=False)
    assert sorted(str(s.path) for s in run.skipped) == sorted(str(p) for p in (not_image, truncated, missing))
    for skipped in run.skipped:
        assert skipped.reason
    assert list(run.boxes) == [records[0].image_id, records[1].image_id]
    assert run.computed == 2
    # nothing is cached for the failures
    assert len(list(ProposalCache(tmp_path / "cache", SS_FAST).folder.glob("*.npz"))) == 2


def test_workers_give_identical_boxes(tmp_path):
    records = write_dataset(tmp_path, n=4)
    config = ProposalConfig(method="selective-search-fast", resize_to=200)
    serial = compute_proposals(records, config, tmp_path / "c1", workers=1, progress=False)
    parallel = compute_proposals(records, config, tmp_path / "c2", workers=2, progress=False)
    assert parallel.computed == 4 and not parallel.skipped
    assert list(parallel.boxes) == list(serial.boxes)
    for key in serial.boxes:
        torch.testing.assert_close(parallel.boxes[key], serial.boxes[key], rtol=0, atol=0)
    reused = compute_proposals(records, config, tmp_path / "c2", workers=2, progress=False)
    assert (reused.computed, reused.reused) == (0, 4)


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        compute_proposals([], SS_FAST, tmp_path, workers=0)


GRID = ProposalConfig(method="grid", max_proposals=300)


def fresh_boxes(record, config=GRID):
    return propose(np.array(Image.open(record.image_path).convert("RGB")), config)


@pytest.mark.parametrize(
    "fault", ["truncated", "flipped-byte", "rewritten-boxes", "other-image", "other-config", "no-checksum"]
)
def test_damaged_or_foreign_entries_are_detected_and_recomputed(tmp_path, fault):
    records = write_dataset(tmp_path, n=2)
    cache_root = tmp_path / "cache"
    compute_proposals(records, GRID, cache_root, progress=False)
    cache = ProposalCache(cache_root, GRID)
    entry = cache.path_for(records[0].image_id)
    if fault == "truncated":
        entry.write_bytes(entry.read_bytes()[:-30])
    elif fault == "flipped-byte":  # one byte in the middle of the stored boxes
        data = bytearray(entry.read_bytes())
        boxes = fresh_boxes(records[0]).numpy().tobytes()
        start = bytes(data).find(boxes)
        assert start > 0
        data[start + len(boxes) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    elif fault in ("rewritten-boxes", "no-checksum"):  # a valid file whose boxes are not the ones checksummed
        with np.load(entry, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        arrays["boxes"] = arrays["boxes"][::-1].copy()
        if fault == "no-checksum":  # as written before entries had a checksum
            del arrays["boxes_sha256"]
        with open(entry, "wb") as out:
            np.savez(out, **arrays)
    elif fault == "other-image":
        entry.write_bytes(cache.path_for(records[1].image_id).read_bytes())
    else:
        other = ProposalConfig(method="grid", max_proposals=300, grid_stride=0.4)
        compute_proposals(records[:1], other, cache_root, progress=False)
        entry.write_bytes(ProposalCache(cache_root, other).path_for(records[0].image_id).read_bytes())
    damaged = entry.read_bytes()
    got, reason = cache.lookup(records[0].image_id, file_sha256(records[0].image_path))
    assert got is None and str(entry) in reason
    run = compute_proposals(records, GRID, cache_root, progress=False)
    assert (run.computed, run.reused, run.recomputed_stale, run.skipped) == (1, 1, 1, [])
    assert entry.read_bytes() != damaged
    for record in records:
        torch.testing.assert_close(run.boxes[record.image_id], fresh_boxes(record), rtol=0, atol=0)
    assert compute_proposals(records, GRID, cache_root, progress=False).reused == 2


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_full_disk_is_a_clear_error_and_leaves_no_partial_entry(tmp_path):
    records = write_dataset(tmp_path, n=2)
    cache = ProposalCache(tmp_path / "cache", GRID)
    old = fresh_boxes(records[0]).numpy()
    entry = cache.store(records[0].image_id, old, "h1")
    old_bytes = entry.read_bytes()
    assert len(old_bytes) > 2048
    with file_size_limit(2048), pytest.raises(DiskFullError) as caught:
        cache.store(records[0].image_id, old[::-1], "h2")
    assert caught.value.errno == errno.EFBIG
    assert f"cannot write {entry}: the file size limit is reached" in str(caught.value)
    assert entry.read_bytes() == old_bytes  # the older entry is untouched
    assert [p.name for p in cache.folder.iterdir()] == [entry.name]  # no temporary file left
    # a run still returns the boxes and says clearly why they were not cached
    with file_size_limit(2048), pytest.warns(RuntimeWarning, match="file size limit is reached") as warned:
        run = compute_proposals(records, GRID, tmp_path / "cache", progress=False)
    assert (run.computed, run.recomputed_stale) == (2, 1) and len(warned) == 2
    assert str(cache.path_for(records[1].image_id)) in str(warned[0].message) + str(warned[1].message)
    assert entry.read_bytes() == old_bytes and [p.name for p in cache.folder.iterdir()] == [entry.name]
    for record in records:
        torch.testing.assert_close(run.boxes[record.image_id], fresh_boxes(record), rtol=0, atol=0)


# ----------------------------------------------------------------------------- recall


def test_proposal_recall_hand_worked():
    def record(image_id, boxes, difficult):
        return ImageRecord(
            image_id=image_id, image_path=Path(f"{image_id}.png"), width=100, height=100,
            boxes=torch.tensor(boxes, dtype=torch.float32), difficult=torch.tensor(difficult),
        )

    records = [
        record("a", [[0, 0, 10, 10], [20, 20, 30, 30]], [False, False]),
        record("b", [[0, 0, 10, 10], [50, 50, 60, 60]], [True, False]),
        record("c", [[0, 0, 10, 10]], [False]),  # no proposals at all: a miss
        record("d", [], []),  # nothing to find
    ]
    proposals = {
        "a": torch.tensor([[0, 0, 10, 8], [20, 20, 30, 26], [70, 70, 90, 90]]),  # IoU 0.8 and 0.6
        "b": torch.tensor([[50, 50, 60, 55]]),  # IoU 0.5 with the non-difficult box
        "d": torch.tensor([[0, 0, 5, 5]]),
    }
    recall = proposal_recall(proposals, records)
    assert recall == {0.5: pytest.approx(3 / 4), 0.7: pytest.approx(1 / 4)}
    assert proposal_recall(proposals, records, iou_thresholds=(0.9,)) == {0.9: 0.0}
    assert math.isnan(proposal_recall(proposals, records[3:])[0.5])
