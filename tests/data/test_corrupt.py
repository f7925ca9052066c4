"""Bad data at scale: a generated set with every kind of fault (``--corrupt``).

Runs on it must finish, report each bad item by its file, and produce on the
good items exactly what a clean run on those items produces. The clean
reference is the same generator with the same seed and ``corrupt=False``
(the good items' files are byte-identical), its split files cut down to the
good items.

How each fault is met (see ``sppnet.data.voc``): the reader skips the image
for a broken image file (truncated, empty, not an image, decompression bomb),
a broken or missing XML file and a missing image file, reporting the XML
file with a reason that names the image file; it skips only the bad object
for an unknown class or a NaN, inverted, zero-area or wholly outside box (the
image keeps its good boxes); it reports an unsafe id with the split file.
With ``check_images=False`` the unreadable images reach the stages, which
report them: ``compute_proposals`` and ``FeatureCache.fill`` (``.skipped``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from sppnet.cli import main
from sppnet.data.datasets import open_detection_dataset
from sppnet.data.images import image_size
from sppnet.proposals import ProposalConfig, compute_proposals
from sppnet.data.shapes import SHAPE_CLASSES
from sppnet.data.synthetic import (
    FAULT_KINDS,
    IMAGE_FAULTS,
    MANIFEST,
    OBJECT_FAULTS,
    SPLIT_FAULTS,
    DetectionSynthConfig,
    corrupt_detection,
    synthesize_detection,
)
from sppnet.data.voc import read_voc, write_voc_split
from sppnet.engine.feature_cache import FeatureCache
from sppnet.evaluation.results import write_voc_results
from sppnet.evaluation.voc import Detections
from torchvision.ops import box_iou

CONFIG = DetectionSynthConfig(train=15, test=15, seed=5, min_side=64, max_side=96)
SPLITS = ("train", "test")
# Faults that leave an image file the reader rejects but a reader that does
# not open images (check_images=False) lets through to the stages.
UNREADABLE = ("truncated-image", "empty-image", "not-an-image", "decompression-bomb")


def _digest(root: Path) -> str:
    return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes()
                                   for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """(corrupted root, clean root restricted to the good items, manifest)."""
    base = tmp_path_factory.mktemp("corrupt")
    # the same folder name: generated annotations record it in <folder>
    corrupted, clean = base / "corrupted" / "set", base / "clean" / "set"
    counts = synthesize_detection(corrupted, replace(CONFIG, corrupt=True))
    synthesize_detection(clean, CONFIG)
    manifest = json.loads((corrupted / MANIFEST).read_text())
    assert counts["corrupted"] == len(manifest["faults"])
    for split in SPLITS:
        write_voc_split(clean, split, good_ids(manifest, split))
    return corrupted, clean, manifest


def entries(manifest, split, kinds=FAULT_KINDS):
    return {key: kind for key, kind in manifest["faults"].items() if manifest["splits"][key] == split and kind in kinds}


def good_ids(manifest, split):
    """The images a clean run should see, in split order: untouched ones,
    those whose only fault is one extra bad object, the one listed twice."""
    keep = set(manifest["clean"][split]) | set(entries(manifest, split, {**OBJECT_FAULTS, "duplicate-id": ""}))
    return sorted(keep)  # generated ids sort in split order


# ----------------------------------------------------------------------------- the generator


def test_every_kind_in_its_own_image_in_each_split_deterministic(sets, tmp_path):
    corrupted, clean, manifest = sets
    for split in SPLITS:
        found = entries(manifest, split)
        assert sorted(found.values()) == sorted(FAULT_KINDS)  # every kind once per split, one image each
        assert len(manifest["clean"][split]) >= 2 and not set(manifest["clean"][split]) & set(found)
    for key, kind in manifest["faults"].items():
        path = corrupted / manifest["files"][key]
        assert path.exists() == (kind not in ("missing-xml", "missing-image")), (key, kind)
    # the truncated JPEG still has a readable header: only decoding can find it
    for key in [k for k, v in manifest["faults"].items() if v == "truncated-image"]:
        assert image_size(corrupted / manifest["files"][key])
    # untouched images and annotations are byte-identical to the clean set's
    for split in SPLITS:
        for image_id in manifest["clean"][split]:
            for folder, ext in (("JPEGImages", "jpg"), ("Annotations", "xml")):
                name = f"{folder}/{image_id}.{ext}"
                assert (corrupted / name).read_bytes() == (clean / name).read_bytes(), name
    # the same seed corrupts the same way; writing again over a set replaces its manifest
    again = tmp_path / "again" / "set"
    synthesize_detection(again, replace(CONFIG, corrupt=True))
    assert _digest(again) == _digest(corrupted)
    synthesize_detection(again, replace(CONFIG, corrupt=True))
    assert _digest(again) == _digest(corrupted)
    with pytest.raises(ValueError, match="already been corrupted"):
        corrupt_detection(again, 0)
    with pytest.raises(ValueError, match="at least 15 images per split"):
        DetectionSynthConfig(train=14, test=0, corrupt=True)


# ----------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("split", [*SPLITS, "trainval"])
def test_reader_reports_every_fault_with_its_file(sets, split):
    corrupted, clean, manifest = sets
    data = open_detection_dataset(corrupted, split)
    faults = entries(manifest, "train" if split == "trainval" else split)
    reports = [str(s) for s in data.skipped]
    ids = [r.image_id for r in data.images]
    for key, kind in faults.items():
        file = manifest["files"][key]
        if kind in SPLIT_FAULTS:
            file = f"ImageSets/Main/{split}.txt"  # trainval lists them too
            mine = [r for r in reports if str(corrupted / file) in r and repr(key) in r]
            expected = "points outside the dataset root" if kind == "unsafe-id" else "listed more than once"
            assert len(mine) == 1 and expected in mine[0], (key, reports)
            assert (key in ids) == (kind == "duplicate-id")
            continue
        mine = [r for r in reports if str(corrupted / file) in r]
        assert len(mine) == 1, (key, kind, reports)
        if kind in IMAGE_FAULTS:
            assert key not in ids and mine[0].endswith("image skipped"), mine
        else:
            assert key in ids and mine[0].endswith("object skipped"), mine
    # nothing else was reported, and every good image is there
    assert len(reports) == len(faults)
    assert ids == good_ids(manifest, "train" if split == "trainval" else split)


@pytest.mark.parametrize("split", SPLITS)
def test_good_items_read_exactly_as_the_clean_set(sets, split):
    corrupted, clean, manifest = sets
    bad, good = open_detection_dataset(corrupted, split), open_detection_dataset(clean, split)
    assert good.skipped == [] and bad.classes == good.classes
    assert [r.image_id for r in bad.images] == [r.image_id for r in good.images]
    for a, b in zip(bad.images, good.images):
        assert (a.width, a.height) == (b.width, b.height)
        assert Path(a.image_path).read_bytes() == Path(b.image_path).read_bytes()
        for name in ("boxes", "labels", "difficult", "truncated"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (a.image_id, name)
    # images with a bad extra object keep all their good boxes
    assert any(r.num_objects > 0 for r in bad.images if manifest["faults"].get(r.image_id) in OBJECT_FAULTS)


# ----------------------------------------------------------------------------- the stages


def test_stages_report_unreadable_images_the_reader_did_not_open(sets, tmp_path):
    corrupted, clean, manifest = sets
    data = read_voc(corrupted, "train", SHAPE_CLASSES, check_images=False)
    unreadable = {manifest["files"][k] for k, v in entries(manifest, "train", UNREADABLE).items()}
    assert {Path(r.image_path).relative_to(corrupted).as_posix() for r in data.images} >= unreadable
    good = set(good_ids(manifest, "train"))

    run = compute_proposals(data.images, ProposalConfig(method="grid"), tmp_path / "proposals", progress=False)
    assert {Path(s.path).relative_to(corrupted).as_posix() for s in run.skipped} == unreadable
    assert set(run.boxes) == good
    reference = compute_proposals(open_detection_dataset(clean, "train").images, ProposalConfig(method="grid"),
                                  tmp_path / "reference", progress=False)
    assert all(torch.equal(run.boxes[i], reference.boxes[i]) for i in good)

    trunk = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU())
    cache = FeatureCache(tmp_path / "features", trunk, scales=(32,))
    filled = cache.fill(data.images, progress=False)
    assert {Path(s.path).relative_to(corrupted).as_posix() for s in filled.skipped} == unreadable
    assert filled.computed == len(good)
    for skipped in filled.skipped:
        assert str(skipped.path) in skipped.reason  # the reason names the file too


@pytest.mark.parametrize("method", ["grid", "selective-search-fast"])
def test_proposals_on_good_items_equal_a_clean_run(sets, tmp_path, method):
    corrupted, clean, manifest = sets
    config = ProposalConfig(method=method, resize_to=None, min_size=4)
    for split in SPLITS:
        bad = compute_proposals(open_detection_dataset(corrupted, split).images, config, tmp_path / "bad", progress=False)
        good = compute_proposals(open_detection_dataset(clean, split).images, config, tmp_path / "good", progress=False)
        assert bad.skipped == [] and good.skipped == []  # the reader already left out every bad image
        assert list(bad.boxes) == list(good.boxes) == good_ids(manifest, split)
        for image_id in good.boxes:
            assert good.boxes[image_id].shape[0] > 0
            assert torch.equal(bad.boxes[image_id], good.boxes[image_id]), image_id


def _pseudo_detections(dataset, proposals) -> dict[int, Detections]:
    """A deterministic 'detector': for each class, the 3 proposals of each
    image that best overlap its boxes of that class, scored by that overlap
    (plus a little for later ranks, so that scores rarely tie)."""
    per_class = {}
    for label in range(1, dataset.num_classes):
        ids, scores, boxes = [], [], []
        for record in dataset.images:
            candidates = proposals[record.image_id]
            gt = record.boxes[record.labels == label]
            overlap = box_iou(candidates, gt).max(1).values if len(gt) else torch.zeros(len(candidates))
            overlap = overlap + 1e-4 * torch.arange(len(candidates)) / len(candidates)
            top = overlap.argsort(descending=True)[:3]
            ids += [record.image_id] * len(top)
            scores.append(overlap[top].double())
            boxes.append(candidates[top].double())
        per_class[label] = Detections(ids, torch.cat(scores), torch.cat(boxes))
    return per_class


def test_eval_on_good_items_gives_the_clean_ap(sets, tmp_path, capsys):
    corrupted, clean, manifest = sets
    outputs = {}
    for name, root in (("bad", corrupted), ("good", clean)):
        dataset = open_detection_dataset(root, "test")
        run = compute_proposals(dataset.images, ProposalConfig(method="grid"), tmp_path / name / "proposals",
                                progress=False)
        results = tmp_path / name / "results"
        write_voc_results(_pseudo_detections(dataset, run.boxes), dataset.classes, "test", results)
        assert main(["eval", "detect", "--data", str(root), "--split", "test", "--results", str(results),
                     "--json", str(tmp_path / name / "ap.json")]) == 0
        captured = capsys.readouterr()
        table = "".join(line for line in captured.out.splitlines(True) if not line.startswith("wrote"))
        outputs[name] = (json.loads((tmp_path / name / "ap.json").read_text()), table,
                         {p.name: p.read_bytes() for p in sorted(results.iterdir())})
    (bad_json, bad_table, bad_files), (good_json, good_table, good_files) = outputs["bad"], outputs["good"]
    assert bad_files == good_files  # the same detections, line for line
    assert bad_json == good_json and bad_table == good_table
    assert 0 < bad_json["map"] <= 1 and all(ap is not None for ap in bad_json["ap"].values())


# ----------------------------------------------------------------------------- the CLI


def test_cli_propose_finishes_and_names_every_bad_file(sets, tmp_path, capsys):
    corrupted, clean, manifest = sets
    code = main(["propose", "--data", str(corrupted), "--split", "train", "--method", "grid",
                 "--cache", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 0, err
    faults = entries(manifest, "train")
    assert f"skipped or fixed {len(faults)} item(s)" in err
    for key, kind in faults.items():
        assert str(corrupted / manifest["files"][key]) in err, (key, kind)
    assert f"grid: {len(good_ids(manifest, 'train'))} images" in out


def test_cli_synth_corrupt(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["data", "synth", "--task", "detect", "--corrupt", "--out", str(out), "--train", "15", "--test", "0",
                 "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / MANIFEST).read_text())
    assert f"injected {len(manifest['faults'])} faults" in printed and str(out / MANIFEST) in printed
    assert sorted(set(manifest["faults"].values())) == sorted(FAULT_KINDS)
    assert open_detection_dataset(out, "train").skipped  # it opens, with its faults reported
    shutil.rmtree(out)
    assert main(["data", "synth", "--task", "classify", "--corrupt", "--out", str(out)]) == 2
    assert "--corrupt applies to --task detect only" in capsys.readouterr().err
