"""The pre-training crops: boxes grown by the context factor, warped square."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sppnet.data.records import BACKGROUND, DetectionDataset, ImageRecord
from sppnet.engine.pretrain import PretrainConfig, pretrain_classify_config, write_pretrain_crops


def _dataset(tmp_path) -> tuple[DetectionDataset, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    record = ImageRecord(
        image_id="image", image_path=path, width=80, height=60,
        # a 3:1 box near the right border, and one too small to crop
        boxes=torch.tensor([[50.0, 20.0, 80.0, 30.0], [0.0, 0.0, 4.0, 4.0]]),
        labels=torch.tensor([1, 1]), difficult=torch.zeros(2, dtype=torch.bool),
        truncated=torch.zeros(2, dtype=torch.bool),
    )
    return DetectionDataset(root=tmp_path, split="train", classes=(BACKGROUND, "bar"), images=[record]), pixels


def test_tight_crops_are_the_box_pixels(tmp_path):
    dataset, pixels = _dataset(tmp_path)
    write_pretrain_crops(dataset, tmp_path / "crops", PretrainConfig(background_per_image=0), seed=0)
    crops = sorted((tmp_path / "crops" / "bar").iterdir())
    assert [c.name for c in crops] == ["image_0.png"]  # the 4-pixel box is below min_crop
    np.testing.assert_array_equal(np.asarray(Image.open(crops[0])), pixels[20:30, 50:80])


def test_context_grows_the_box_about_its_centre_inside_the_image_and_warp_squares_it(tmp_path):
    dataset, pixels = _dataset(tmp_path)
    config = PretrainConfig(background_per_image=0, context=1.2, warp=32)
    write_pretrain_crops(dataset, tmp_path / "crops", config, seed=0)
    crop = np.asarray(Image.open(tmp_path / "crops" / "bar" / "image_0.png"))
    # 30 x 10 box centred at (65, 25), grown 1.2x: x 47..83 clipped to 80, y 19..31
    expected = np.asarray(Image.fromarray(pixels[19:31, 47:80]).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(crop, expected)


@pytest.mark.parametrize("field, value", [("context", 0.9), ("warp", 4)])
def test_bad_values_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"pretrain.{field}"):
        PretrainConfig(**{field: value})


@pytest.mark.parametrize("epochs, steps", [(None, (20,)), (25, (20,)), (40, (32,)), (10, (8,))])
def test_lr_steps_keep_their_fraction_of_the_run_when_the_epochs_change(epochs, steps):
    """classify-crops-tiny steps after 20 of 25 epochs; pre-training it for 40 must
    step after 32 (not spend half the run at lr / 10)."""
    train = pretrain_classify_config(PretrainConfig(preset="classify-crops-tiny", epochs=epochs)).train
    assert (train.epochs, train.lr_steps, train.val_split) == (epochs or 25, steps, None)


def test_in_context_stage_trains_the_trunk_as_a_fast_rcnn(detection_backbone, tmp_path):
    """RUN/pretrain-context is the crop classifier with the trunk of a Fast
    R-CNN trained from it on the detection set; a finished stage is not redone."""
    from safetensors.torch import load_file

    from sppnet.data.datasets import open_detection_dataset
    from sppnet.engine.pretrain import train_in_context
    from sppnet.engine.classification import load_classifier

    data, crop_run = detection_backbone
    train = open_detection_dataset(data, "train")
    config = PretrainConfig(context_preset="detect-fast-rcnn-tiny", context_iterations=3)
    messages = []
    out = train_in_context(config, train, data, tmp_path / "run", crop_run, log=messages.append)
    assert out == tmp_path / "run" / "pretrain-context"
    assert any("3 iterations" in m for m in messages)
    crop = load_file(crop_run / "model.safetensors")
    fast = load_file(tmp_path / "run" / "pretrain-context-fast-rcnn" / "model.safetensors")
    context = load_file(out / "model.safetensors")
    assert set(context) == set(crop)
    changed = 0
    for key, value in context.items():
        if key.startswith("trunk."):
            torch.testing.assert_close(value, fast[key], rtol=0, atol=0)
            changed += not torch.equal(value, crop[key])
        else:  # fc6-fc8 stay the crop classifier's
            torch.testing.assert_close(value, crop[key], rtol=0, atol=0)
    assert changed >= 6  # conv2-conv5 weights and biases trained; conv1 frozen (the preset's frozen_convs=1)
    torch.testing.assert_close(context["trunk.features.0.weight"], crop["trunk.features.0.weight"], rtol=0, atol=0)
    _, _, classes = load_classifier(out)
    assert classes == load_classifier(crop_run)[2]
    again = []
    assert train_in_context(config, train, data, tmp_path / "run", crop_run, log=again.append) == out and again == []


def test_in_context_stage_can_hand_over_the_fast_rcnns_fc_layers(detection_backbone, tmp_path):
    """With ``context_fc`` the in-context classifier's fc7 is the Fast R-CNN's,
    its fc6 the Fast R-CNN's on the 6 x 6 level's columns and zero on the
    other levels'; fc8 stays the crop classifier's. ``context_warmup_iterations``
    reaches the Fast R-CNN's lr."""
    from safetensors.torch import load_file

    from sppnet.data.datasets import open_detection_dataset
    from sppnet.engine.pretrain import train_in_context

    data, crop_run = detection_backbone
    config = PretrainConfig(context_preset="detect-fast-rcnn-tiny", context_iterations=3, context_fc=True,
                            context_warmup_iterations=2, context_overrides=("train.sampling.bg_low=0.05",))
    out = train_in_context(config, open_detection_dataset(data, "train"), data, tmp_path / "run", crop_run,
                           log=lambda message: None)
    crop = load_file(crop_run / "model.safetensors")
    fast = load_file(tmp_path / "run" / "pretrain-context-fast-rcnn" / "model.safetensors")
    context = load_file(out / "model.safetensors")
    six = fast["head.fc6.0.weight"].shape[1]  # the 6 x 6 level comes first in the pyramid's columns
    for name in ("fc6.0.bias", "fc7.0.weight", "fc7.0.bias"):
        torch.testing.assert_close(context[name], fast[f"head.{name}"], rtol=0, atol=0)
    torch.testing.assert_close(context["fc6.0.weight"][:, :six], fast["head.fc6.0.weight"], rtol=0, atol=0)
    assert torch.count_nonzero(context["fc6.0.weight"][:, six:]) == 0
    assert not torch.equal(context["fc7.0.weight"], crop["fc7.0.weight"])
    torch.testing.assert_close(context["fc8.weight"], crop["fc8.weight"], rtol=0, atol=0)
    rows = (tmp_path / "run" / "pretrain-context-fast-rcnn" / "log.csv").read_text().splitlines()[1:]
    assert [float(row.split(",")[1]) for row in rows[:2]] == pytest.approx([0.005, 0.01])  # the preset's lr 0.01
    recorded = yaml.safe_load((tmp_path / "run" / "pretrain-context-fast-rcnn" / "config.yaml").read_text())
    assert recorded["train"]["sampling"]["bg_low"] == 0.05


def test_context_overrides_change_the_preset_before_its_iterations_are_scaled():
    """The overrides apply first: the lr step they set is scaled to context_iterations
    as the preset's own would be; the preset's pre-training of its own is switched off."""
    from sppnet.config import load_config
    from sppnet.engine.fast_rcnn import FastRCNNConfig
    from sppnet.engine.pretrain import context_fast_rcnn_config

    config = PretrainConfig(context_preset="detect-fast-rcnn-tiny", context_iterations=300,
                            context_overrides=("train.iterations=900", "train.lr_steps=[600]",
                                               "train.sampling.hard_mining_nms=0.0"))
    fast = context_fast_rcnn_config(config)
    assert (fast.train.iterations, fast.train.lr_steps) == (300, (200,))
    assert fast.train.sampling.hard_mining_nms == 0.0 and fast.pretrain.context_preset is None
    # No overrides: the preset's own sampling (OHEM, since session 25), not a default.
    preset = load_config(FastRCNNConfig, "detect-fast-rcnn-tiny").train.sampling
    assert preset.hard_mining_nms > 0
    assert context_fast_rcnn_config(PretrainConfig(context_preset="detect-fast-rcnn-tiny")).train.sampling == preset


def test_the_in_context_stage_trains_on_the_detectors_proposals():
    """The detector's proposal settings replace the context preset's (one
    proposal cache, the windows the detector sees), but for those that
    context_overrides name."""
    from sppnet.engine.pretrain import context_fast_rcnn_config
    from sppnet.proposals import ProposalSettings

    detector = ProposalSettings(proposals="grid", max_proposals=123, proposal_resize=None, proposal_min_size=5)
    fast = context_fast_rcnn_config(PretrainConfig(context_preset="detect-fast-rcnn-tiny"), detector)
    assert (fast.proposals, fast.max_proposals, fast.proposal_resize, fast.proposal_min_size) == ("grid", 123, None, 5)
    named = PretrainConfig(context_preset="detect-fast-rcnn-tiny", context_overrides=("max_proposals=77",))
    fast = context_fast_rcnn_config(named, detector)
    assert (fast.proposals, fast.max_proposals, fast.proposal_min_size) == ("grid", 77, 5)
    assert context_fast_rcnn_config(named).proposal_min_size == 16  # no detector given: the preset's own


def test_a_given_backbone_is_used_as_it_is(tmp_path):
    from sppnet.engine.pretrain import pretrain_backbone

    config = PretrainConfig(context_preset="detect-fast-rcnn-tiny")
    given = tmp_path / "imagenet-like"
    assert pretrain_backbone(config, None, tmp_path / "run", given, seed=0) == given
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, value, message", [
    ("context_preset", "no-such-preset", "neither a preset"),
    ("context_iterations", 0, "context_iterations"),
    ("context_warmup_iterations", -1, "context_warmup_iterations"),
    ("context_overrides", ("train.samplin.bg_low=0.1",), "unknown config key 'train.samplin'"),
    ("context_overrides", ("train.sampling.hard_mining_nms=2",), "hard_mining_nms must be in"),
])
def test_in_context_settings_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**{"context_preset": "detect-fast-rcnn-tiny", field: value})
    # Without a context preset there is no stage to change: the overrides are unused, not an error
    # (``--set pretrain.context_preset=null`` alone turns SPP-net's in-context stage off).
    assert PretrainConfig(context_overrides=("train.samplin.bg_low=0.1",)).context_preset is None
