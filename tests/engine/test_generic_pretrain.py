"""The generic pre-training stage: trained once, cached, and the crop stage starts from it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace

import pytest
import torch

from sppnet.data.pretrain_set import PRETRAIN_CLASSES
from sppnet.engine.generic_pretrain import GENERATOR_VERSION, cache_root, generic_classify_config, generic_trunk, generic_trunk_key
from sppnet.engine.pretrain import PretrainConfig, pretrain_classify_config
from sppnet.models.backbones import build_backbone


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SPPNET_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("SPPNET_CACHE")
    assert cache_root().name == "sppnet"


def test_the_key_changes_with_what_shapes_the_trunk():
    classify = generic_classify_config("classify-crops-tiny", 10)
    assert generic_trunk_key(classify, 4400, 0) == generic_trunk_key(classify, 4400, 0)
    assert generic_trunk_key(classify, 4400, 0) != generic_trunk_key(classify, 8800, 0)
    assert generic_trunk_key(classify, 4400, 0) != generic_trunk_key(classify, 4400, 1)
    longer = generic_classify_config("classify-crops-tiny", 20)
    assert generic_trunk_key(classify, 4400, 0) != generic_trunk_key(longer, 4400, 0)
    scaled = replace(classify, train=replace(classify.train, trunk_lr_scale=0.5))
    assert generic_trunk_key(classify, 4400, 0) != generic_trunk_key(scaled, 4400, 0)
    averaged = replace(classify, train=replace(classify.train, average_decay=0.99))
    assert generic_trunk_key(classify, 4400, 0) != generic_trunk_key(averaged, 4400, 0)


def test_fields_added_later_leave_the_key_of_the_trunks_cached_before_them():
    # train.trunk_lr_scale (session 31) at 1, train.average_decay and train.erase (session 32) at 0
    # and pretrain.generic_fc (session 36) off train as before they existed: the key is the
    # hash of the config without them, as the caches made before them were keyed.
    classify = generic_classify_config("classify-crops-tiny", 10)
    before = asdict(classify)
    del before["train"]["trunk_lr_scale"], before["train"]["average_decay"], before["train"]["erase"]
    del before["pretrain"]["generic_fc"]
    described = {"generator": GENERATOR_VERSION, "images": 4400, "seed": 0, "torch": torch.__version__,
                 "classify": before}
    expected = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert generic_trunk_key(classify, 4400, 0) == expected


def test_generic_recipe_warms_up_and_keeps_the_step_fraction():
    train = generic_classify_config("classify-crops-tiny", 10).train
    assert (train.epochs, train.lr_steps, train.warmup_iterations) == (10, (8,), 500)  # the preset steps at 20 of 25
    assert generic_classify_config("classify-crops-tiny", 10).model.fc_bias == 1.0


def test_trunk_is_trained_once_then_taken_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPPNET_CACHE", str(tmp_path))
    config = PretrainConfig(generic_images=len(PRETRAIN_CLASSES), generic_epochs=1)
    classify = generic_classify_config(config.preset, config.generic_epochs)
    first_log: list[str] = []
    trunk = generic_trunk(classify, config.generic_images, log=first_log.append)
    assert trunk.is_file() and trunk.is_relative_to(tmp_path / "generic-trunks")
    assert any("generating" in line for line in first_log)
    # the preset's own trunk, loaded strictly: every key, every shape
    loaded = build_backbone("zf5", 0.25, weights=trunk)
    fresh = build_backbone("zf5", 0.25)
    assert not torch.equal(loaded.state_dict()["features.0.weight"], fresh.state_dict()["features.0.weight"])
    stamp = trunk.stat().st_mtime_ns
    again_log: list[str] = []
    assert generic_trunk(classify, config.generic_images, log=again_log.append) == trunk
    assert trunk.stat().st_mtime_ns == stamp and any("cached" in line for line in again_log)
    # the crop stage starts from it
    assert pretrain_classify_config(config, trunk).model.weights == trunk.resolve()


def test_generic_settings_are_checked():
    from sppnet.engine.classification import ClassifyPretrainConfig

    with pytest.raises(ValueError, match="generic_images"):
        PretrainConfig(generic_images=-1)
    with pytest.raises(ValueError, match="generic_epochs"):
        ClassifyPretrainConfig(generic_images=44, generic_epochs=0)


def test_an_unwritable_cache_falls_back_to_the_run_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SPPNET_CACHE", str(blocker / "cache"))  # under a file: cannot be made
    config = PretrainConfig(generic_images=len(PRETRAIN_CLASSES), generic_epochs=1)
    log: list[str] = []
    trunk = generic_trunk(generic_classify_config(config.preset, config.generic_epochs), config.generic_images, log=log.append,
                          fallback=tmp_path / "run" / "pretrain-generic")
    assert trunk.is_file() and trunk.is_relative_to(tmp_path / "run" / "pretrain-generic")
    assert any("not writable" in line for line in log)
    with pytest.raises(PermissionError, match="SPPNET_CACHE"):
        generic_trunk(generic_classify_config(config.preset, config.generic_epochs), config.generic_images, log=log.append)


def _tiny_classify(folder, generic_images: int, *extra: str):
    from sppnet.config import load_config
    from sppnet.engine.classification import ClassifyConfig

    # classify-tiny's model (the generic trunk's), an lr so small that one epoch leaves the start in place
    return load_config(ClassifyConfig, "classify-tiny", [
        f"pretrain.generic_images={generic_images}", "pretrain.generic_epochs=1", "train.epochs=1",
        "train.min_iterations=0", "train.batch_size=8", "train.lr=1e-12", "train.val_split=null", *extra])


def test_a_classifier_starts_from_the_generic_trunk(tmp_path, monkeypatch):
    from sppnet.data.synthetic import synthesize_classification
    from sppnet.engine.checkpoint import load_weights
    from sppnet.engine.classification import train_classifier

    monkeypatch.setenv("SPPNET_CACHE", str(tmp_path / "cache"))
    synthesize_classification(tmp_path / "cls", train=8, test=4, seed=0)
    config = _tiny_classify(tmp_path, len(PRETRAIN_CLASSES))
    log: list[str] = []
    model = train_classifier(config, tmp_path / "cls", tmp_path / "run", progress=False, log=log.append)
    assert any("generic" in line for line in log)
    trunks = list((tmp_path / "cache" / "generic-trunks").glob("*/trunk.safetensors"))
    assert len(trunks) == 1
    started = load_weights(trunks[0])
    for name, value in model.trunk.state_dict().items():
        torch.testing.assert_close(value, started[name], atol=1e-8, rtol=0)
    # the same stage as a detector's pre-training with the same recipe: one cached trunk for both
    stage = generic_classify_config(config.pretrain.generic_preset, config.pretrain.generic_epochs)
    assert trunks[0].parent.name == generic_trunk_key(stage, len(PRETRAIN_CLASSES), 0)
    # pretrain.generic_fc: fc6 and fc7 start from the generic classifier's too, fc8 is new
    from sppnet.engine.generic_pretrain import generic_classifier

    generic = load_weights(generic_classifier(stage, len(PRETRAIN_CLASSES)) / "model.safetensors")
    assert not torch.allclose(model.fc6[0].weight, generic["fc6.0.weight"])  # off: fc6 starts at random
    with_fc = train_classifier(_tiny_classify(tmp_path, len(PRETRAIN_CLASSES), "pretrain.generic_fc=true"),
                               tmp_path / "cls", tmp_path / "run-fc", progress=False, log=lambda m: None)
    for name, value in with_fc.state_dict().items():
        if name.startswith(("fc6.", "fc7.", "trunk.")):
            torch.testing.assert_close(value, generic[name], atol=1e-8, rtol=0)
    assert with_fc.fc8.weight.shape[0] == 4 != generic["fc8.weight"].shape[0]
    # off: the trunk starts from random weights
    scratch = train_classifier(_tiny_classify(tmp_path, 0), tmp_path / "cls", tmp_path / "run0", progress=False,
                               log=lambda m: None)
    assert not torch.allclose(scratch.trunk.state_dict()["features.0.weight"], started["features.0.weight"])


def test_a_classifier_of_another_trunk_cannot_take_the_generic_one(tmp_path, monkeypatch):
    from sppnet.data.synthetic import synthesize_classification
    from sppnet.engine.classification import train_classifier

    monkeypatch.setenv("SPPNET_CACHE", str(tmp_path / "cache"))
    synthesize_classification(tmp_path / "cls", train=4, test=4, seed=0)
    with pytest.raises(ValueError, match="generic_preset 'classify-crops-tiny'.*width 0.125"):
        train_classifier(_tiny_classify(tmp_path, 44, "model.width=0.125"), tmp_path / "cls", tmp_path / "run",
                         progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="generic_fc needs the fc layers.*levels \\[6, 3, 2, 1\\].*levels \\[4, 2, 1\\]"):
        train_classifier(_tiny_classify(tmp_path, 44, "pretrain.generic_fc=true", "model.levels=[4,2,1]"),
                         tmp_path / "cls", tmp_path / "run-levels", progress=False, log=lambda m: None)
    assert not (tmp_path / "cache" / "generic-trunks").exists() or not any((tmp_path / "cache" / "generic-trunks").iterdir())


_CONCURRENT = """
import sys
from sppnet.engine.generic_pretrain import generic_classify_config, generic_trunk
from sppnet.engine.pretrain import PretrainConfig
config = PretrainConfig(generic_images=44, generic_epochs=1)
print(generic_trunk(generic_classify_config(config.preset, config.generic_epochs), 44, log=lambda m: print(m, flush=True)))
"""


def test_two_runs_at_once_train_the_trunk_once(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "SPPNET_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sum("generating" in out for out in outputs) == 1, outputs
    assert sum("the cached trunk" in out for out in outputs) == 1, outputs
    assert outputs[0].splitlines()[-1] == outputs[1].splitlines()[-1]


def _finished_run_at(run, error: float) -> None:
    """A finished run folder as the stage reads it: its classes, its weights file and its metrics."""
    run.mkdir(parents=True)
    (run / "classes.txt").write_text("\n".join(PRETRAIN_CLASSES) + "\n")
    (run / "model.safetensors").write_bytes(b"")
    (run / "metrics.csv").write_text("epoch,val_top1_error\n1,0.98\n2,%.4f\n" % error)


def test_a_trunk_that_never_left_chance_is_trained_again_and_refused(tmp_path, monkeypatch):
    # Three finished runs of the stage, each ending at chance (1 - 1/44 = 0.977): none is
    # kept as the trunk, and the stage says why instead of handing a useless trunk on.
    from sppnet.engine.generic_pretrain import final_error

    monkeypatch.setenv("SPPNET_CACHE", str(tmp_path))
    classify = generic_classify_config("classify-crops-tiny", 10)
    images = 5 * len(PRETRAIN_CLASSES) * 15  # 15 training images per validation image: 5 per class to judge by
    folder = tmp_path / "generic-trunks" / generic_trunk_key(classify, images, 0)
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "done").write_text("")
    for name in ("run", "run-2", "run-3"):
        _finished_run_at(folder / name, 0.975)
    assert final_error(folder / "run") == pytest.approx((0.975, 1 - 1 / 44))
    log: list[str] = []
    with pytest.raises(RuntimeError, match="3 runs .* ended at chance"):
        generic_trunk(classify, images, log=log.append)
    assert sum("never left the plateau" in line for line in log) == 3
    assert sum("training again from another random start" in line for line in log) == 2
    assert not (folder / "trunk.safetensors").exists()


def test_the_kept_classifier_is_the_last_attempt_that_finished(tmp_path, monkeypatch):
    # Attempts stop at the first run kept, so a later finished attempt means the earlier ones were refused.
    from sppnet.engine.generic_pretrain import generic_classifier

    monkeypatch.setenv("SPPNET_CACHE", str(tmp_path))
    classify = generic_classify_config("classify-crops-tiny", 10)
    folder = tmp_path / "generic-trunks" / generic_trunk_key(classify, 44, 0)
    _finished_run_at(folder / "run", 0.975)
    (folder / "trunk.safetensors").write_bytes(b"")
    assert generic_classifier(classify, 44, log=lambda m: None) == folder / "run"
    _finished_run_at(folder / "run-2", 0.5)
    (folder / "run-3").mkdir()  # begun, never finished: not a classifier
    assert generic_classifier(classify, 44, log=lambda m: None) == folder / "run-2"


def test_without_the_crop_stage_the_detector_starts_from_the_generic_classifier(tmp_path, monkeypatch):
    from sppnet.engine.classification import load_classifier
    from sppnet.engine.pretrain import pretrain_backbone

    monkeypatch.setenv("SPPNET_CACHE", str(tmp_path / "cache"))
    config = PretrainConfig(generic_images=len(PRETRAIN_CLASSES), generic_epochs=1, crop_stage=False)
    log: list[str] = []
    # No detection set is read: the crops are not made.
    run = pretrain_backbone(config, None, tmp_path / "run", None, seed=0, log=log.append)
    assert run == tmp_path / "run" / "pretrain" and not (tmp_path / "run" / "pretrain-data").exists()
    assert any("no crop stage" in line for line in log)
    source = next((tmp_path / "cache" / "generic-trunks").glob("*/run"))
    assert (run / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    model, _, classes = load_classifier(run)
    assert sorted(classes) == sorted(PRETRAIN_CLASSES)
    trunk = build_backbone("zf5", 0.25, weights=source.parent / "trunk.safetensors")
    for name, value in trunk.state_dict().items():
        assert torch.equal(model.trunk.state_dict()[name], value), name
    # done once: a second call neither trains nor copies
    stamp = (run / "model.safetensors").stat().st_mtime_ns
    assert pretrain_backbone(config, None, tmp_path / "run", None, seed=0, log=log.append) == run
    assert (run / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("overrides", [{"generic_images": 0}, {"generic_images": 44, "weights": "alexnet.pth"}])
def test_no_crop_stage_needs_the_generic_classifier(overrides):
    with pytest.raises(ValueError, match="crop_stage=true to pre-train on the set's crops"):
        PretrainConfig(crop_stage=False, **overrides)
