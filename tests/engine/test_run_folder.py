"""A detector run pins its trunk: backbone.txt holds the classifier run and the SHA-256 of its weights."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from sppnet.engine.run_folder import open_run_folder, record_backbone, recorded_backbone


def _classifier_run(folder, value: float = 1.0):
    folder.mkdir(parents=True)
    save_file({"trunk.w": torch.full((3,), value)}, folder / "model.safetensors")
    return folder


def test_the_record_holds_the_path_and_the_weights_hash(tmp_path):
    trunk = _classifier_run(tmp_path / "cls")
    run = tmp_path / "run"
    run.mkdir()
    record_backbone(run, trunk)
    lines = (run / "backbone.txt").read_text().splitlines()
    assert lines == [str(trunk.resolve()), "sha256 " + hashlib.sha256((trunk / "model.safetensors").read_bytes()).hexdigest()]
    assert recorded_backbone(run) == trunk.resolve()
    record_backbone(run, trunk)  # a resumed run on the same trunk
    assert (run / "backbone.txt").read_text().splitlines() == lines


def test_a_changed_or_missing_trunk_is_refused(tmp_path):
    trunk = _classifier_run(tmp_path / "cls")
    run = tmp_path / "run"
    run.mkdir()
    record_backbone(run, trunk)
    save_file({"trunk.w": torch.full((3,), 2.0)}, trunk / "model.safetensors")  # the classifier run was retrained
    with pytest.raises(ValueError, match="changed since"):
        recorded_backbone(run)
    with pytest.raises(ValueError, match="changed since"):
        record_backbone(run, trunk)  # nor may a resumed run carry on with it
    (trunk / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="is missing"):
        recorded_backbone(run)


def test_a_resumed_run_keeps_its_trunk_and_an_unfinished_classifier_is_no_trunk(tmp_path):
    first, other = _classifier_run(tmp_path / "a"), _classifier_run(tmp_path / "b", 3.0)
    run = tmp_path / "run"
    run.mkdir()
    record_backbone(run, first)
    with pytest.raises(ValueError, match="was started on the trunk"):
        record_backbone(run, other)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "checkpoint.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="only a finished classifier run"):
        record_backbone(tmp_path / "run2", unfinished)


def test_runs_written_before_the_hash_load_by_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "backbone.txt").write_text(f"{tmp_path / 'cls'}\n")
    assert recorded_backbone(run) == tmp_path / "cls"


def test_each_start_and_resume_records_the_thread_count(tmp_path):
    import json
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Config:
        value: int = 1

    run = tmp_path / "run"
    threads = torch.get_num_threads()
    open_run_folder(run, Config(), resume=False, classes=["bg", "a"])
    try:
        torch.set_num_threads(1)
        open_run_folder(run, Config(), resume=True, classes=["bg", "a"])
    finally:
        torch.set_num_threads(threads)
    entries = [json.loads(line) for line in (run / "environment.jsonl").read_text().splitlines()]
    assert [e["event"] for e in entries] == ["start", "resume"]
    assert entries[0]["threads"] == threads and entries[1]["threads"] == 1
    assert entries[0]["torch"] == torch.__version__
