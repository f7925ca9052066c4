import torch
import pytest

from sppnet.config import load_config
from sppnet.data.datasets import open_detection_dataset
from sppnet.engine.detection_stages import detect_dataset
from tests.mirror import assert_mirror_symmetric
from tests.refine import assert_refined_as_reference
from tests.learning import LEARNING_SEED, map_and_chance, record_learning
from sppnet.engine.sppnet_detection import SPPNetConfig, load_sppnet, train_sppnet

# One xdist worker runs the whole module (scripts/test.sh: --dist loadgroup), so that its
# module-scoped trained detector is trained once, not once in each worker.
pytestmark = pytest.mark.xdist_group("sppnet-detection")
GAP_BAR = 0.028  # mAP above chance: half the worst measured run (see the learning test's docstring)
OVERRIDES = [
    # Selective search as in the Fast R-CNN test (the same cached boxes): grid windows rarely
    # overlap the small generated objects by 0.5, which left runs near chance.
    "scales=[160, 320]", "train_scales=null", "proposals=selective-search-fast", "max_proposals=300",
    "finetune.iterations=80",
    "finetune.lr_steps=[60]",
    # The margins below were measured at the window target of 96 (the preset's is 160 since
    # session 19; at these two scales it moves which windows are pooled at 320).
    "window_target=96.0",
    # The margins below were measured without flip testing (the preset's since session 14);
    # flip testing has its own test.
    "test.flip=false",
    # and without box voting (the preset's since session 21); it has its own test.
    "test.box_vote=null",
    # and without iterative localisation (the preset's since session 34); it has its own test.
    "test.refine=0", "test.regress_first=false",
    # and with the papers' window sampling, not hard example mining (the preset's since
    # session 22; tests/engine/test_window_training.py tests it).
    "finetune.hard_mining_nms=0.0", "finetune.bg_low=0.1",
    # and in float32 (the preset's fine-tuning is bf16 since session 23, on CPUs that have
    # it: another CPU would train another model; test_window_training.py tests bf16).
    "finetune.precision=fp32",
    # and with the paper's box-regression lambda (the preset's is 100 since session 29).
    "bbox.ridge=4000.0",
    # and with boxes of 16 px a side at least (the preset's are 8 since session 38).
    "proposal_min_size=16",
]


@pytest.fixture(scope="module")
def trained(detection_backbone, tmp_path_factory):
    # The session's pre-trained trunk (conftest): pre-training itself is
    # exercised by that fixture and by the kill -9 and CLI tests.
    data, backbone = detection_backbone
    root = tmp_path_factory.mktemp("sppnet")
    config = load_config(SPPNetConfig, "detect-sppnet-tiny", OVERRIDES + [f"finetune.seed={LEARNING_SEED}"])
    train = open_detection_dataset(data, "train")
    messages = []
    detector = train_sppnet(config, train, data, root / "run", backbone=backbone, log=messages.append)
    return data, root / "run", detector, messages, config


def test_stages_are_written_and_a_run_reloads(trained):
    data, run, detector, messages, _ = trained
    for name in ("config.yaml", "classes.txt", "finetune.safetensors", "svm.safetensors", "bbox.safetensors"):
        assert (run / name).is_file(), name
    assert not (run / "pretrain").exists()  # --backbone given: no pre-training
    assert (run / "backbone.txt").read_text().splitlines()[1].startswith("sha256 ")  # the trunk is pinned
    assert any("SVMs: retrains per class" in m for m in messages)
    test = open_detection_dataset(data, "test")
    reloaded = load_sppnet(run)
    record = test.images[0]
    proposals = torch.tensor([[0.0, 0.0, 50.0, 50.0], [10.0, 20.0, 90.0, 120.0]])
    a, b = detector.detect(record, proposals), reloaded.detect(record, proposals)
    assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["boxes"], b["boxes"])


def test_detector_learns_well_above_chance(trained):
    """Trained VOC07 mAP minus chance (the same boxes, scores shuffled) must
    exceed GAP_BAR = 2.8 points: half the worst of 10 runs measured by
    ``benchmarks/learning_margins.py`` (2026-12-04; SPPNET_TEST_SEED 0-4 x 1
    and 2 threads; worst 5.8 points). Per run, in %:

    - seed 0, 1 thread(s): mAP 20.0, chance 2.2, above chance 17.8
    - seed 0, 2 thread(s): mAP 26.7, chance 2.0, above chance 24.7
    - seed 1, 1 thread(s): mAP 16.9, chance 2.3, above chance 14.6
    - seed 1, 2 thread(s): mAP 15.4, chance 1.3, above chance 14.2
    - seed 2, 1 thread(s): mAP 17.3, chance 1.8, above chance 15.5
    - seed 2, 2 thread(s): mAP 15.1, chance 6.0, above chance 9.0
    - seed 3, 1 thread(s): mAP 9.8, chance 1.2, above chance 8.6
    - seed 3, 2 thread(s): mAP 8.0, chance 2.2, above chance 5.9
    - seed 4, 1 thread(s): mAP 15.7, chance 1.6, above chance 14.0
    - seed 4, 2 thread(s): mAP 6.9, chance 1.2, above chance 5.8
    """
    data, _, detector, _, _ = trained
    test = open_detection_dataset(data, "test")
    per_class, _ = detect_dataset([detector], test, data, log=lambda m: None)
    trained_map, chance_map = map_and_chance(per_class, test)
    record_learning("sppnet", map=trained_map, chance=chance_map, margin=trained_map - chance_map - GAP_BAR)
    assert trained_map - chance_map > GAP_BAR, (trained_map, chance_map)


def test_resume_skips_finished_stages_and_refuses_other_configs(trained, detection_backbone):
    data, run, _, _, config = trained
    backbone = detection_backbone[1]
    train = open_detection_dataset(data, "train")
    messages = []
    train_sppnet(config, train, data, run, backbone=backbone, resume=True, log=messages.append)
    assert not any("fine-tuning fc6" in m or "training per-class SVMs" in m or "pre-training the trunk" in m for m in messages), messages
    with pytest.raises(ValueError, match="differs from the given config"):
        other = load_config(SPPNetConfig, "detect-sppnet-tiny", OVERRIDES + ["test.nms=0.5"])
        train_sppnet(other, train, data, run, backbone=backbone, resume=True, log=messages.append)
    with pytest.raises(ValueError, match="not empty"):
        train_sppnet(config, train, data, run, backbone=backbone, log=messages.append)


def test_testing_can_add_scales_the_training_never_saw(detection_backbone, tmp_path):
    """train_scales: the training images' maps exist at those scales only; the
    test images are pooled at every test scale."""
    data, backbone = detection_backbone
    config = load_config(SPPNetConfig, "detect-sppnet-tiny", [
        "scales=[96, 160]", "train_scales=[96]", "proposals=grid", "max_proposals=30", "finetune.iterations=2",
        "pretrain.context_preset=null"])
    train = open_detection_dataset(data, "train")
    detector = train_sppnet(config, train, data, tmp_path / "run", backbone=backbone, log=lambda *_: None)
    record = train.images[0]
    folder = detector.cache.path(record.image_id, 96).parent
    assert sorted(p.name for p in folder.iterdir()) == ["s96.safetensors", "s96f.safetensors"]
    assert detector.cache.scales == (96, 160) == load_sppnet(tmp_path / "run").cache.scales
    test = open_detection_dataset(data, "test")
    detect_dataset([detector], test, data, log=lambda *_: None)
    assert (detector.cache.path(test.images[0].image_id, 160)).is_file()


def _scored_at_once(detector, record, count: int, seed: int):
    """``count`` random windows in ``record``, their pool5 and scores, every
    window pooled at once (``window_features``): the blocked tests' reference."""
    from sppnet.models.scoring import window_scores

    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(count, 2, generator=generator) * torch.tensor([record.width, record.height]) * 0.8
    proposals = torch.cat([corners, corners + 8 + torch.rand(count, 2, generator=generator) * 120], 1)
    pooled, fc7 = detector.window_features(record, proposals)
    model = detector.model
    return proposals, pooled, window_scores(fc7, model.scorer, model.svms, model.svm_scale, model.head.fc8)


def test_detect_pools_windows_in_blocks_with_the_scores_of_the_whole_pooled_matrix(trained):
    # detect() pools and multiplies by fc6 a block of windows at a time (pooled_fc6);
    # the reference pools every window at once (window_features), as before.
    from sppnet.ops import class_nms, clip_boxes

    data, _, detector, _, _ = trained
    record = open_detection_dataset(data, "test").images[0]
    proposals, pooled, scores = _scored_at_once(detector, record, 700, seed=0)
    model = detector.model
    window, labels, boxes, kept_scores = class_nms(proposals, scores, detector.test.nms, detector.test.top_k)
    regressed = clip_boxes(model.regressors.apply(pooled[window], boxes, labels), (record.height, record.width))
    model.fc6_block = 128  # several blocks
    try:
        out = detector.detect(record, proposals)
    finally:
        model.fc6_block = 1024
    assert torch.equal(out["labels"], labels)
    torch.testing.assert_close(out["scores"], kept_scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["boxes"], regressed, rtol=1e-5, atol=1e-4)


def test_box_voting_averages_every_windows_regression_pooled_at_once(trained):
    # With test.box_vote the kept boxes move to the score-weighted mean of the class's
    # regressed windows around them; the reference regresses the whole pooled matrix,
    # class by class, the detector its pooler's blocks.
    from sppnet.ops import box_iou, class_nms, clip_boxes

    data, _, detector, _, _ = trained
    record = open_detection_dataset(data, "test").images[1]
    proposals, pooled, scores = _scored_at_once(detector, record, 400, seed=2)
    model = detector.model
    window, labels, _, kept_scores = class_nms(proposals, scores, detector.test.nms, detector.test.top_k)
    size = (record.height, record.width)
    expected = []
    for w, label in zip(window.tolist(), labels.tolist()):
        every = clip_boxes(model.regressors.apply(pooled, proposals, torch.full((len(proposals),), label)), size)
        weights = scores[:, label - 1].clamp(min=0) * (box_iou(every[w][None], every)[0] >= 0.5)
        expected.append(weights @ every / weights.sum() if weights.sum() > 0 else every[w])
    model.box_vote = 0.5
    try:
        out = detector.detect(record, proposals)
    finally:
        model.box_vote = None
    assert torch.equal(out["labels"], labels)
    torch.testing.assert_close(out["scores"], kept_scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["boxes"], torch.stack(expected), rtol=1e-5, atol=1e-3)
    assert not torch.allclose(out["boxes"], detector.detect(record, proposals)["boxes"])  # voting moved boxes


def test_refine_scores_each_class_best_windows_regressed_and_nms_compares_regressed_boxes(trained):
    # test.refine N (iterative localisation): each class's N best-scored windows are
    # regressed by that class's regressor and scored again, and with test.regress_first
    # NMS runs over every window's regressed box. The reference pools every window at
    # once and regresses class by class (tests/refine.py); the detector pools blocks and
    # scores the new windows as a second set.
    from sppnet.models.scoring import window_scores

    data, _, detector, _, _ = trained
    record = open_detection_dataset(data, "test").images[2]
    proposals = _scored_at_once(detector, record, 300, seed=3)[0]
    model = detector.model

    def scored(boxes):
        pooled, fc7 = detector.window_features(record, boxes)
        return pooled, window_scores(fc7, model.scorer, model.svms, model.svm_scale, model.head.fc8)

    assert_refined_as_reference(detector, record, proposals, scored)


def test_refine_without_a_regressed_box_left_detects_as_without_refine(trained):
    # Regressors that move every window 100 widths right: clipped to the image, each
    # regressed box collapses to zero width at the border and is dropped, so refine has
    # nothing to add and the detections are those of NMS over the regressed boxes alone.
    from sppnet.models.box_regression import BoxRegressors

    data, _, detector, _, _ = trained
    record = open_detection_dataset(data, "test").images[0]
    proposals = _scored_at_once(detector, record, 100, seed=4)[0]
    model = detector.model
    kept = model.regressors
    weights = torch.zeros_like(kept.weights)
    weights[1:, -1, 0] = 100.0  # the bias row, delta x
    model.regressors, model.regress_first = BoxRegressors(weights, kept.feature_scale), True
    try:
        plain = detector.detect(record, proposals)
        detector.set_refine(20)
        refined = detector.detect(record, proposals)
    finally:
        detector.set_refine(0)
        model.regressors, model.regress_first = kept, False
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(refined[key], plain[key]), key


def test_the_model_on_tensors_detects_as_the_run_does_on_its_cached_maps(trained):
    # models.detection.SPPNet computes each image's maps itself (image_maps); the
    # engine's detector reads them from the feature cache. Same numbers.
    from sppnet.engine.fast_rcnn import image_tensor

    data, _, detector, _, _ = trained
    model = detector.model.eval()
    test = open_detection_dataset(data, "test")
    records = test.images[:2]
    generator = torch.Generator().manual_seed(1)
    proposals = []
    for record in records:
        corners = torch.rand(60, 2, generator=generator) * torch.tensor([record.width, record.height]) * 0.7
        proposals.append(torch.cat([corners, corners + 10 + torch.rand(60, 2, generator=generator) * 80], 1))
    outputs = model([image_tensor(r.image_path) for r in records], proposals)
    for record, boxes, out in zip(records, proposals, outputs):
        expected = detector.detect(record, boxes)
        assert len(expected["scores"]) > 0
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(out[key], expected[key]), key
    with pytest.raises(RuntimeError, match="trains in stages"):
        model([image_tensor(records[0].image_path)], proposals[:1], [{"boxes": torch.zeros(0, 4)}])


def test_flip_testing_is_mirror_symmetric_and_reads_the_cached_mirror_maps(trained):
    # With flip testing each window is scored in the image and in its mirror, so the
    # mirrored image's detections are the image's, mirrored. The run reads the
    # mirror's maps from its feature cache; the model on tensors computes them.
    from sppnet.engine.fast_rcnn import image_tensor
    from sppnet.ops import mirror_boxes

    data, _, detector, _, _ = trained
    model = detector.model.eval()
    record = open_detection_dataset(data, "test").images[0]
    image = image_tensor(record.image_path)
    generator = torch.Generator().manual_seed(2)
    corners = (torch.rand(80, 2, generator=generator) * torch.tensor([record.width, record.height]) * 0.7).round()
    boxes = torch.cat([corners, corners + 10 + (torch.rand(80, 2, generator=generator) * 80).round()], 1)
    plain = model([image], [boxes])[0]
    detector.set_flip(True)
    try:
        out = model([image], [boxes])[0]
        mirrored = model([image.flip(-1)], [mirror_boxes(boxes, record.width)])[0]
        from_cache = detector.detect(record, boxes)
    finally:
        detector.set_flip(False)
    assert len(out["scores"]) > 0
    assert not torch.allclose(out["scores"][:5], plain["scores"][:5]), "the mirror must be another view"
    assert_mirror_symmetric(out, mirrored, record.width)
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(from_cache[key], out[key]), key


@pytest.mark.parametrize("sampling", [["finetune.hard_mining_nms=0.7"],
                                      ["finetune.hard_mining_nms=0.0", "finetune.bg_low=0.1"]])
def test_fine_tuning_pools_each_image_once_and_trains_the_same(detection_backbone, tmp_path, monkeypatch, sampling):
    """Each image's and mirror's labelled windows are pooled once and kept
    (float16, the maps' own values); a step takes its rows (all of them with
    hard mining, the sampled ones without): the same weights come out as when
    every step pools again."""
    from safetensors.torch import load_file

    import sppnet.engine.sppnet_detection as module

    data, backbone = detection_backbone
    config = load_config(SPPNetConfig, "detect-sppnet-tiny", [
        "scales=[96, 160]", "train_scales=null", "proposals=grid", "max_proposals=30", "finetune.iterations=12",
        "finetune.lr_steps=[8]", "finetune.images_per_batch=2", "finetune.precision=fp32",
        "pretrain.context_preset=null", "svm.train=false", "test.scorer=softmax", "proposal_min_size=16", *sampling])
    train = open_detection_dataset(data, "train")
    pooled = []
    pool_windows = module.pool_windows
    monkeypatch.setattr(module, "pool_windows", lambda *a, **k: pooled.append(len(a[1])) or pool_windows(*a, **k))
    weights, calls = {}, {}
    for budget in (0, module.TRAINING_POOLED_BYTES):  # 0: nothing kept, every step pools
        monkeypatch.setattr(module, "TRAINING_POOLED_BYTES", budget)
        pooled.clear()
        train_sppnet(config, train, data, tmp_path / str(budget), backbone=backbone, log=lambda *_: None)
        weights[budget] = load_file(str(tmp_path / str(budget) / "finetune.safetensors"))
        calls[budget] = len(pooled)
    kept = module.TRAINING_POOLED_BYTES
    assert weights[0].keys() == weights[kept].keys()
    assert all(torch.equal(weights[0][name], weights[kept][name]) for name in weights[0])
    assert calls[0] == 12 * 2 and calls[kept] <= 2 * len(train.images) and calls[kept] < calls[0]
