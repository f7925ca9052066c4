import pytest
import torch

from sppnet.data.transforms import resize_min_side
from sppnet.evaluation.classification import _views_on_feature_maps, multi_view_scales, predict_views
from sppnet.models.backbones import ZF5
from sppnet.models.classifier import SPPClassifier
from sppnet.ops import boxes_to_rois, roi_spp


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SPPClassifier(ZF5(width=0.125), num_classes=5, hidden=32).eval()


@torch.no_grad()
def test_a_view_covering_the_whole_image_reproduces_the_full_image_prediction(model):
    image = torch.randn(3, 256, 341)
    conv = model.trunk(image[None])
    whole = torch.tensor([[0.0, 0.0, 341.0, 256.0]])
    rois = boxes_to_rois([whole], model.trunk.geometry, "sppnet", feature_size=conv.shape[-2:])
    assert rois.tolist() == [[0, 0, 0, conv.shape[-1] - 1, conv.shape[-2] - 1]]  # the whole map
    assert torch.equal(model.head(roi_spp(conv, rois, model.spp.levels)), model(image[None]))


@torch.no_grad()
def test_multi_view_counts_and_probabilities(model):
    image = torch.randn(3, 120, 160)
    logits = _views_on_feature_maps(model, image, 224)
    assert multi_view_scales(224) == (224, 256, 300, 360, 448, 560)
    assert logits.shape == (6 + 5 * 18, 5)  # 6 views at the smallest scale, 18 at each other
    for mode in ("center", "10", "full", "multi"):
        probs = predict_views(model, image, mode, resize=110, crop_size=96)
        assert probs.shape == (5,) and abs(probs.sum().item() - 1) < 1e-5


@torch.no_grad()
def test_center_view_is_the_model_on_the_center_crop(model):
    image = torch.randn(3, 100, 130)
    resized = resize_min_side(image, 110)
    top, left = (110 - 96) // 2, (resized.shape[2] - 96) // 2
    expected = torch.softmax(model(resized[None, :, top : top + 96, left : left + 96]), 1)[0]
    assert torch.equal(predict_views(model, image, "center", 110, 96), expected)


def test_no_spp_baseline_refuses_variable_size_views():
    torch.manual_seed(0)
    baseline = SPPClassifier(ZF5(width=0.125), num_classes=3, hidden=16, spp=False).eval()
    image = torch.randn(3, 256, 300)
    assert predict_views(baseline, image, "10", 256, 224).shape == (3,)  # 224 -> 13 x 13 -> 6 x 6
    for mode in ("full", "multi"):
        with pytest.raises(ValueError, match="needs an SPP model"):
            predict_views(baseline, image, mode, 256, 224)
    with pytest.raises(ValueError, match="pools to 6 x 6"):
        baseline(torch.randn(1, 3, 180, 180))


def test_the_full_image_side_matches_the_mean_scale_of_the_training_crops():
    import math
    from dataclasses import replace

    from sppnet.engine.classification import ClassifyTrainConfig
    from sppnet.evaluation.classification import full_image_side

    paper = ClassifyTrainConfig(resize=110, crop=96)
    assert full_image_side(paper) == 110  # the paper's crops: the image at the training side
    # Hand-worked: E[a ** -0.5] over a uniform in [0.25, 1] is 2 (1 - 0.5) / 0.75 = 4 / 3: 96 * 4 / 3.
    assert full_image_side(replace(paper, crop_area=(0.25, 1.0))) == 128
    assert full_image_side(replace(paper, crop_area=(0.5, 0.5))) == round(96 / math.sqrt(0.5))  # one area: 136
    # Against the mean of crop / sqrt(a) over a fine grid of a (midpoint rule).
    for low, high in ((0.1, 1.0), (0.3, 0.6), (0.8, 1.0)):
        grid = [low + (high - low) * (i + 0.5) / 100_000 for i in range(100_000)]
        expected = sum(96 / math.sqrt(a) for a in grid) / len(grid)
        assert abs(full_image_side(replace(paper, crop_area=(low, high))) - expected) <= 0.5


def test_evaluation_takes_the_full_image_view_at_the_matched_side(tmp_path, monkeypatch):
    import yaml

    from sppnet.evaluation import classification

    from sppnet.config import from_dict, to_dict
    from sppnet.data.images import load_image
    from sppnet.data.synthetic import synthesize_classification
    from sppnet.data.transforms import to_tensor
    from sppnet.engine.checkpoint import save_weights
    from sppnet.engine.classification import ClassifyConfig, build_classifier
    from sppnet.evaluation.classification import evaluate_classifier

    data = tmp_path / "data"
    synthesize_classification(data, train=4, test=12, seed=0, min_side=64, max_side=100)
    config = from_dict(ClassifyConfig, {"model": {"backbone": "zf5", "width": 0.125, "hidden": 16},
                                        "train": {"resize": 110, "crop": 96, "crop_area": [0.25, 1.0]}})
    classes = sorted(p.name for p in (data / "test").iterdir())
    torch.manual_seed(1)
    model = build_classifier(config.model, len(classes), 96).eval()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(config)))
    (run / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    save_weights(run / "model.safetensors", model.state_dict())
    images = [(to_tensor(load_image(path)), classes.index(path.parent.name))
              for path in sorted((data / "test").glob("*/*"))]

    def error_at(side):
        return sum(int(predict_views(model, image, "full", side, 96).argmax() != label) for image, label in images) / len(images)

    sides = []

    def recording(model, image, mode, resize, crop_size):  # passes through, noting the side
        sides.append(resize)
        return predict_views(model, image, mode, resize, crop_size)

    monkeypatch.setattr(classification, "predict_views", recording)
    summary = evaluate_classifier(run, data, "test", "full", log=lambda *_: None)
    assert summary["top1_error"] == pytest.approx(error_at(128))
    assert sides == [128] * len(images)
    # The confusion counts and each class's error, against the same slow loop.
    expected = [[0] * len(classes) for _ in classes]
    for image, label in images:
        expected[label][int(predict_views(model, image, "full", 128, 96).argmax())] += 1
    assert summary["classes"] == classes and summary["confusion"] == expected
    assert summary["per_class_top1_error"] == {
        name: pytest.approx(1 - row[k] / sum(row)) for k, (name, row) in enumerate(zip(classes, expected))}
    sides.clear()
    evaluate_classifier(run, data, "test", "center", log=lambda *_: None)
    assert sides == [110] * len(images)  # the other views keep the training side
