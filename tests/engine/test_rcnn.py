import copy
import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from sppnet.config import load_config
from sppnet.data.datasets import open_detection_dataset
from sppnet.data.synthetic import DetectionSynthConfig, synthesize_detection
from sppnet.engine.checkpoint import TrainingDiverged
from sppnet.engine.detection_stages import dataset_proposals, detect_dataset, label_dataset
from tests.mirror import assert_mirror_symmetric
from tests.refine import assert_refined_as_reference
from tests.learning import LEARNING_SEED, map_and_chance, record_learning
from sppnet.engine.rcnn import RCNNConfig, _finetune, load_rcnn, train_rcnn
from sppnet.models.detection.rcnn import context_boxes, warp_windows
from sppnet.ops import mirror_boxes


def slow_warp(image: torch.Tensor, box, size: int) -> torch.Tensor:
    """Bilinear sample at the centre of each output pixel's share of the box;
    pixel i covers [i, i + 1), so its value sits at i + 0.5; zeros outside."""
    channels, height, width = image.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    out = torch.zeros(channels, size, size, dtype=torch.float64)

    def pixel(y, x):
        return image[:, y, x].double() if 0 <= y < height and 0 <= x < width else torch.zeros(channels, dtype=torch.float64)

    for i in range(size):
        for j in range(size):
            y = y1 + (i + 0.5) * (y2 - y1) / size - 0.5
            x = x1 + (j + 0.5) * (x2 - x1) / size - 0.5
            y0, x0 = math.floor(y), math.floor(x)
            ly, lx = y - y0, x - x0
            out[:, i, j] = ((1 - ly) * (1 - lx) * pixel(y0, x0) + (1 - ly) * lx * pixel(y0, x0 + 1)
                            + ly * (1 - lx) * pixel(y0 + 1, x0) + ly * lx * pixel(y0 + 1, x0 + 1))
    return out.float()


def test_warp_matches_crop_and_resize_for_integer_boxes_inside_the_image():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(3, 40, 50, generator=generator)
    # Shrinking boxes: bilinear crop-and-resize never reads past the crop, so
    # it must agree with sampling the whole image.
    boxes = torch.tensor([[0.0, 0.0, 50.0, 40.0], [4.0, 6.0, 28.0, 30.0], [10.0, 2.0, 46.0, 20.0]])
    warped = warp_windows(image, boxes, 12)
    for box, window in zip(boxes, warped):
        x1, y1, x2, y2 = (int(v) for v in box)
        expected = F.interpolate(image[None, :, y1:y2, x1:x2], size=(12, 12), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(window, expected, atol=1e-5, rtol=1e-5)


def test_warp_matches_slow_reference_with_subpixel_and_outside_boxes():
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(3, 9, 11, generator=generator)
    boxes = torch.tensor([
        [2.0, 1.0, 6.0, 7.0],  # enlarged (upsampled)
        [0.3, 0.7, 10.6, 8.2],  # sub-pixel
        [-4.0, -3.0, 5.5, 4.0],  # partly outside: mean-filled
        [8.0, 6.0, 15.0, 12.0],
        [20.0, 20.0, 30.0, 30.0],  # wholly outside: all mean
    ])
    warped = warp_windows(image, boxes, 7)
    assert warped.shape == (5, 3, 7, 7)
    for box, window in zip(boxes, warped):
        torch.testing.assert_close(window, slow_warp(image, box, 7), atol=1e-5, rtol=1e-5)
    assert warped[4].abs().max() == 0


def test_warp_matches_torchvision_roi_align_on_the_zero_padded_image():
    # roi_align (aligned, one sample per bin) clamps samples within a pixel of the border to the edge pixel;
    # with a pixel of zeros around the image it extends the image by zeros, as warp_windows does.
    from torchvision.ops import roi_align

    generator = torch.Generator().manual_seed(3)
    image = torch.randn(3, 57, 71, generator=generator, dtype=torch.float64)
    corners = torch.rand(40, 2, generator=generator, dtype=torch.float64) * torch.tensor([90.0, 75.0]) - 10
    sizes = torch.rand(40, 2, generator=generator, dtype=torch.float64) * 60 + 1
    boxes = torch.cat([corners, corners + sizes], dim=1)
    warped = warp_windows(image, boxes, 24, 3)
    windows = context_boxes(boxes, 24, 3) + 1
    rois = torch.cat([torch.zeros(40, 1, dtype=torch.float64), windows], dim=1)
    expected = roi_align(F.pad(image, (1, 1, 1, 1))[None], rois, output_size=(24, 24), spatial_scale=1.0,
                         sampling_ratio=1, aligned=True)
    torch.testing.assert_close(warped, expected, atol=1e-10, rtol=1e-10)


def test_context_enlarges_about_the_centre_by_hand_worked_numbers():
    # 224 / (224 - 32) = 7/6: a 40 x 80 box centred at (30, 60) becomes 46.67 x 93.33.
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    expected = torch.tensor([[30 - 140 / 6, 60 - 280 / 6, 30 + 140 / 6, 60 + 280 / 6]])
    torch.testing.assert_close(context_boxes(boxes, 224, 16), expected)
    torch.testing.assert_close(context_boxes(boxes, 224, 0), boxes)
    with pytest.raises(ValueError, match="context"):
        context_boxes(boxes, 32, 16)


def test_warped_box_fills_the_middle_with_context_around_it():
    # A 64-pixel box at a warp of 96 with 16 pixels of context: factor 1.5, so
    # the window is [-6, 90) and one image pixel maps to one output pixel.
    image = torch.zeros(3, 84, 84)
    image[:, 10:74, 10:74] = 1.0
    image[:, 0:10, :] = 2.0  # image above the box: context rows 6..15
    warped = warp_windows(image, torch.tensor([[10.0, 10.0, 74.0, 74.0]]), 96, 16)[0]
    assert torch.all(warped[:, 16:80, 16:80] == 1.0)  # the box fills the middle 64 pixels
    assert torch.all(warped[:, 6:16, 16:80] == 2.0)  # 16 - 6 rows of image context
    # Outside the image: the mean (zero), to float32 rounding of the sample positions (grid_sample's own
    # arithmetic: the last row above the image, exactly on its edge, takes ~2e-6 of the row below).
    zero = dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(warped[:, :6], torch.zeros(3, 6, 96), **zero)
    torch.testing.assert_close(warped[:, :, :6], torch.zeros(3, 96, 6), **zero)
    torch.testing.assert_close(warped[:, 90:], torch.zeros(3, 6, 96), **zero)
    torch.testing.assert_close(warped[:, :, 90:], torch.zeros(3, 96, 6), **zero)
    torch.testing.assert_close(warped[:, 80:90, 16:80], torch.zeros(3, 10, 64), **zero)  # image below the box


def test_mirrored_windows_of_the_mirrored_image_are_the_mirrored_warps():
    generator = torch.Generator().manual_seed(2)
    image = torch.randn(3, 20, 31, generator=generator)
    boxes = torch.tensor([[2.0, 3.0, 17.5, 15.0], [-3.0, 0.0, 12.0, 25.0]])
    warped = warp_windows(image, boxes, 16, 2)
    mirrored = warp_windows(image.flip(-1), mirror_boxes(boxes, 31), 16, 2)
    torch.testing.assert_close(mirrored, warped.flip(-1), atol=1e-5, rtol=1e-5)


def test_config_presets_load_and_bad_values_are_refused():
    tiny = load_config(RCNNConfig, "detect-rcnn-tiny")
    paper = load_config(RCNNConfig, "detect-rcnn-paper")
    assert tiny.warp_size == 96 and paper.warp_size == 224 and paper.context == 16
    assert paper.finetune.batch_size == 128 and paper.finetune.fg_fraction == 0.25 and paper.finetune.train_conv
    assert paper.bbox.ridge == 1000.0 and paper.bbox.min_overlap == 0.6 and paper.max_proposals == 2000
    with pytest.raises(ValueError, match="context"):
        RCNNConfig(warp_size=32, context=16)
    with pytest.raises(ValueError, match="window_batch"):
        RCNNConfig(window_batch=0)
    with pytest.raises(ValueError, match="images_per_batch"):
        load_config(RCNNConfig, "detect-rcnn-tiny", ["finetune.images_per_batch=0"])
    with pytest.raises(ValueError, match="bg_low"):
        load_config(RCNNConfig, "detect-rcnn-tiny", ["finetune.bg_low=0.6"])
    with pytest.raises(ValueError, match="frozen_convs"):
        load_config(RCNNConfig, "detect-rcnn-tiny", ["finetune.frozen_convs=-1"])
    assert not tiny.svm.train and tiny.test.scorer == "softmax" and paper.svm.train
    for scorer in ("svm", "null"):  # null: the SVMs
        with pytest.raises(ValueError, match="svm.train is false, so test.scorer must be softmax"):
            load_config(RCNNConfig, "detect-rcnn-tiny", [f"test.scorer={scorer}"])
    with pytest.raises(ValueError, match="svm.train: expected true or false"):
        load_config(RCNNConfig, "detect-rcnn-tiny", ["svm.train=1"])


# The R-CNN cost is one forward pass per window, so the run is kept to
# seconds by few images and windows and a 64-pixel warp; a 64-pixel crop
# classifier pre-trains the trunk (a 96-pixel warp costs 2.25x the pixels).
# Selective search finds most objects in 100 windows (grid: a third).
CLASSIFY_MINI = """
model: {{backbone: zf5, width: 0.25, spp: true, levels: [3, 2, 1], hidden: 128, dropout: 0.3}}
train: {{epochs: 15, batch_size: 16, resize: 74, crop: 64, multi_size: false, second_size: 52, flip: true,
        channel_order: true, optimizer: adam, lr: 0.001, lr_steps: [12], weight_decay: 0.0001, workers: 0, seed: {seed},
        val_split: null}}
"""
# One xdist worker runs the whole module (scripts/test.sh: --dist loadgroup), so that its
# module-scoped trained detector is trained once, not once in each worker.
pytestmark = pytest.mark.xdist_group("rcnn")
GAP_BAR = 0.0035  # mAP above chance: half the worst measured run (see the learning test's docstring)
OVERRIDES = [
    "warp_size=64", "context=5", "window_batch=64", "max_proposals=100", "pretrain.epochs=15",
    # The preset's generic stage trains for minutes; this test's trunk is its own, a crop classifier.
    "pretrain.generic_images=0", "pretrain.crop_stage=true",
    "pretrain.context_preset=null",  # nor the preset's in-context stage (session 26): its crop classifier is the trunk
    "finetune.precision=fp32",  # the margins below were measured in float32 and must hold on every CPU
    "finetune.iterations=120", "finetune.lr_steps=[100]", "finetune.batch_size=32", "finetune.images_per_batch=4",
    "finetune.lr=0.01",  # ten times the preset's: a few dozen iterations must move the network
    "finetune.bg_low=0.1",  # background at IoU 0.1-0.5, the preset's until session 39, as the margins were measured
    "test.flip=false",  # the margins below were measured without flip testing; it has its own test
    "finetune.channel_order=false",  # and without the channel order of the preset's fine-tuning (session 19)
    "test.box_vote=null",  # and without box voting (the preset's since session 21)
    "svm.train=true",  # the SVM stage under test too (the preset skips it since session 27; the softmax scores)
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("rcnn")
    data = root / "data"
    synthesize_detection(data, DetectionSynthConfig(train=30, test=20, seed=1 + LEARNING_SEED, min_side=160, max_side=220))
    (root / "classify-mini.yaml").write_text(CLASSIFY_MINI.format(seed=LEARNING_SEED))
    config = load_config(RCNNConfig, "detect-rcnn-tiny", OVERRIDES + [f"pretrain.preset={root / 'classify-mini.yaml'}",
                                                                f"finetune.seed={LEARNING_SEED}"])
    train = open_detection_dataset(data, "train")
    messages = []
    detector = train_rcnn(config, train, data, root / "run", log=messages.append)
    return data, root / "run", detector, messages, config


def test_stages_are_written_and_a_run_reloads(trained):
    data, run, detector, messages, _ = trained
    for name in ("config.yaml", "classes.txt", "backbone.txt", "finetune.safetensors", "svm.safetensors",
                 "bbox.safetensors", "pretrain/model.safetensors"):
        assert (run / name).is_file(), name
    assert any("fine-tuning the whole network" in m for m in messages)
    assert any("SVMs: retrains per class" in m for m in messages)
    test = open_detection_dataset(data, "test")
    reloaded = load_rcnn(run)
    record = test.images[0]
    proposals = torch.tensor([[0.0, 0.0, 50.0, 50.0], [10.0, 20.0, 90.0, 120.0], [-5.0, 30.0, 60.0, 200.0]])
    a, b = detector.detect(record, proposals), reloaded.detect(record, proposals)
    assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["boxes"], b["boxes"])
    # Batching does not change the features.
    pooled, fc7 = detector.window_features(record, proposals)
    one_by_one = [detector.window_features(record, box[None]) for box in proposals]
    torch.testing.assert_close(pooled, torch.cat([p for p, _ in one_by_one]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fc7, torch.cat([f for _, f in one_by_one]), atol=1e-4, rtol=1e-4)
    assert detector.detect(record, torch.zeros(0, 4))["boxes"].shape == (0, 4)


def test_conv_layers_are_fine_tuned(trained):
    _, run, detector, _, _ = trained
    from sppnet.engine.classification import load_classifier

    classifier, _, _ = load_classifier(run / "pretrain")
    before = classifier.trunk.state_dict()
    after = detector.model.network.trunk.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_detector_learns_well_above_chance(trained):
    """Trained VOC07 mAP minus chance (the same boxes, scores shuffled) must
    exceed GAP_BAR = 0.35 points: half the worst of 10 runs measured by
    ``benchmarks/learning_margins.py`` (2026-12-06, session 26; SPPNET_TEST_SEED
    0-4 x 1 and 2 threads; worst 0.7 points). The 2026-12-04 bar (1.0, 60
    fine-tuning iterations) no longer held: re-measured at 958d8c5, before
    session 26's changes, seed 2 was 0.5 / 0.8 points above chance, and after
    them seeds 1-2 fell below it in 3 of 10 runs; 120 iterations since. Per run, in %:

    - seed 0, 1 thread(s): mAP 8.1, chance 1.8, above chance 6.3
    - seed 0, 2 thread(s): mAP 9.8, chance 3.6, above chance 6.2
    - seed 1, 1 thread(s): mAP 12.8, chance 4.9, above chance 8.0
    - seed 1, 2 thread(s): mAP 8.8, chance 2.1, above chance 6.6
    - seed 2, 1 thread(s): mAP 5.3, chance 1.8, above chance 3.6
    - seed 2, 2 thread(s): mAP 3.2, chance 2.3, above chance 0.9
    - seed 3, 1 thread(s): mAP 12.7, chance 1.5, above chance 11.3
    - seed 3, 2 thread(s): mAP 16.0, chance 1.3, above chance 14.7
    - seed 4, 1 thread(s): mAP 8.1, chance 2.0, above chance 6.0
    - seed 4, 2 thread(s): mAP 3.2, chance 2.5, above chance 0.7
    """
    data, _, detector, _, _ = trained
    test = open_detection_dataset(data, "test")
    per_class, _ = detect_dataset([detector], test, data, log=lambda m: None)
    trained_map, chance_map = map_and_chance(per_class, test)
    record_learning("rcnn", map=trained_map, chance=chance_map, margin=trained_map - chance_map - GAP_BAR)
    assert trained_map - chance_map > GAP_BAR, (trained_map, chance_map)


def test_fc_only_fine_tuning_keeps_the_trunk_and_divergence_is_an_error(trained):
    data, _, detector, _, config = trained
    train = open_detection_dataset(data, "train")
    proposals = dataset_proposals(train, config.proposal_config, data, log=lambda m: None)
    windows = label_dataset(train, proposals)
    fc_only = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, iterations=2, train_conv=False))
    network = copy.deepcopy(detector.model.network)
    _finetune(network, train, windows, fc_only, log=lambda m: None)
    before, after = detector.model.network.state_dict(), network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("trunk."))
    assert not torch.equal(before["fc8.weight"], after["fc8.weight"])
    diverging = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, iterations=10, lr=1e30))
    with pytest.raises(TrainingDiverged, match="loss became"):
        _finetune(copy.deepcopy(detector.model.network), train, windows, diverging, log=lambda m: None)


def test_frozen_convs_stay_as_pre_trained_and_the_layers_above_learn(trained):
    data, _, detector, _, config = trained
    train = open_detection_dataset(data, "train")
    windows = label_dataset(train, dataset_proposals(train, config.proposal_config, data, log=lambda m: None))
    network = copy.deepcopy(detector.model.network)
    frozen = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, iterations=3, frozen_convs=1))
    _finetune(network, train, windows, frozen, log=lambda m: None)
    convs = [name for name, module in network.trunk.named_modules() if isinstance(module, torch.nn.Conv2d)]
    before, after = detector.model.network.trunk.state_dict(), network.trunk.state_dict()
    for suffix in ("weight", "bias"):
        assert torch.equal(before[f"{convs[0]}.{suffix}"], after[f"{convs[0]}.{suffix}"])
        assert not torch.equal(before[f"{convs[1]}.{suffix}"], after[f"{convs[1]}.{suffix}"])
    assert all(parameter.requires_grad for parameter in network.parameters())  # frozen for the fine-tuning only
    too_many = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, frozen_convs=len(convs) + 1))
    with pytest.raises(ValueError, match="frozen_convs"):
        _finetune(copy.deepcopy(detector.model.network), train, windows, too_many, log=lambda m: None)


def test_a_run_without_svms_scores_with_the_softmax_and_refuses_the_svm_scorer(trained, tmp_path):
    data, run, detector, _, config = trained
    train = open_detection_dataset(data, "train")
    no_svms = dataclasses.replace(config, svm=dataclasses.replace(config.svm, train=False),
                                  finetune=dataclasses.replace(config.finetune, iterations=2))
    messages = []
    trained_without = train_rcnn(no_svms, train, data, tmp_path / "run", backbone=run / "pretrain", log=messages.append)
    assert not (tmp_path / "run" / "svm.safetensors").exists() and (tmp_path / "run" / "bbox.safetensors").is_file()
    assert any("no SVMs (svm.train: false)" in m for m in messages)
    assert not any("SVMs: retrains per class" in m for m in messages)
    reloaded = load_rcnn(tmp_path / "run")
    assert reloaded.model.svms is None and reloaded.model.scorer == "softmax"
    record = open_detection_dataset(data, "test").images[0]
    proposals = torch.tensor([[0.0, 0.0, 50.0, 50.0], [10.0, 20.0, 90.0, 120.0]])
    a, b = trained_without.detect(record, proposals), reloaded.detect(record, proposals)
    assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["boxes"], b["boxes"])
    with pytest.raises(ValueError, match="trained no SVMs"):
        reloaded.set_scorer("svm")
    # A run that trained its SVMs still needs them.
    (tmp_path / "copy").mkdir()
    for name in ("config.yaml", "classes.txt", "backbone.txt", "finetune.safetensors", "bbox.safetensors"):
        (tmp_path / "copy" / name).write_bytes((run / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="svm.safetensors is missing"):
        load_rcnn(tmp_path / "copy")


def test_resume_skips_finished_stages_and_refuses_other_configs(trained):
    data, run, _, _, config = trained
    train = open_detection_dataset(data, "train")
    messages = []
    train_rcnn(config, train, data, run, resume=True, log=messages.append)
    assert not any("fine-tuning the whole network" in m or "training per-class SVMs" in m or "training box regressors" in m
                   or "pre-training the trunk" in m for m in messages), messages
    with pytest.raises(ValueError, match="differs from the given config"):
        other = dataclasses.replace(config, test=dataclasses.replace(config.test, nms=0.5))
        train_rcnn(other, train, data, run, resume=True, log=messages.append)
    with pytest.raises(ValueError, match="not empty"):
        train_rcnn(config, train, data, run, log=messages.append)


def test_the_model_on_tensors_detects_as_the_run_does_on_image_files(trained):
    from sppnet.engine.fast_rcnn import image_tensor

    data, _, detector, _, _ = trained
    model = detector.model.eval()
    record = open_detection_dataset(data, "test").images[0]
    proposals = torch.tensor([[0.0, 0.0, 50.0, 50.0], [10.0, 20.0, 90.0, 120.0], [-5.0, 30.0, 60.0, 200.0],
                              [40.0, 40.0, 140.0, 150.0]])
    (out,) = model([image_tensor(record.image_path)], [proposals])
    expected = detector.detect(record, proposals)
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(out[key], expected[key]), key
    model.train()
    with pytest.raises(RuntimeError, match="trains in stages"):
        model([image_tensor(record.image_path)], [proposals])
    model.eval()


def test_refine_scores_each_class_best_windows_warped_again_and_nms_compares_regressed_boxes(trained):
    # test.refine N on R-CNN (iterative localisation, as SPP-net's): each class's N
    # best-scored windows are regressed by that class's regressor, warped from the image
    # and scored again, and with test.regress_first NMS runs over every window's
    # regressed box. The reference scores every window at once and regresses class by
    # class (tests/refine.py); the detector scores the regressed windows as a second set.
    from sppnet.models.scoring import window_scores

    data, _, detector, _, _ = trained
    record = open_detection_dataset(data, "test").images[1]
    generator = torch.Generator().manual_seed(5)
    corners = torch.rand(150, 2, generator=generator) * torch.tensor([record.width, record.height]) * 0.8
    proposals = torch.cat([corners, corners + 8 + torch.rand(150, 2, generator=generator) * 100], 1)
    model = detector.model

    def scored(boxes):
        pooled, fc7 = detector.window_features(record, boxes)
        return pooled, window_scores(fc7, model.scorer, model.svms, model.svm_scale, model.network.fc8)

    assert_refined_as_reference(detector, record, proposals, scored)


def test_flip_testing_is_mirror_symmetric(trained):
    # Each window is also warped from the mirrored image and the two views averaged,
    # so the mirrored image's detections are the image's, mirrored.
    from sppnet.engine.fast_rcnn import image_tensor

    data, _, detector, _, _ = trained
    model = detector.model.eval()
    record = open_detection_dataset(data, "test").images[0]
    image = image_tensor(record.image_path)
    proposals = torch.tensor([[0.0, 0.0, 50.0, 50.0], [10.0, 20.0, 90.0, 120.0], [-5.0, 30.0, 60.0, 200.0],
                              [40.0, 40.0, 140.0, 150.0], [30.0, 10.0, 70.0, 45.0]])
    (plain,) = model([image], [proposals])
    detector.set_flip(True)
    try:
        (out,) = model([image], [proposals])
        (mirrored,) = model([image.flip(-1)], [mirror_boxes(proposals, record.width)])
        from_file = detector.detect(record, proposals)
    finally:
        detector.set_flip(False)
    assert not torch.allclose(out["scores"][:3], plain["scores"][:3]), "the mirror must be another view"
    assert_mirror_symmetric(out, mirrored, record.width)
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(from_file[key], out[key]), key
