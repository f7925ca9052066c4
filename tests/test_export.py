"""sppnet export: ONNX Runtime and TorchScript against eager PyTorch (the numba
pooling path), the traced pooling path against the numba kernel, and the CLI
on run folders."""

import numpy as np
import pytest
import torch
import yaml

from sppnet.cli import main
from sppnet.data.transforms import normalise
from sppnet.export import (
    FastRCNNScoring,
    SPPNetScoring,
    check_onnx,
    check_torchscript,
    export_classifier,
    export_detector,
    export_module,
)
from sppnet.models.backbones import build_backbone
from sppnet.models.classifier import SPPClassifier
from sppnet.models.detection.fast_rcnn import FastRCNN, FastRCNNHead
from sppnet.ops import boxes_to_rois, clip_boxes, roi_spp

onnxruntime = pytest.importorskip("onnxruntime")

# conv5 maps of ZF-5 (width 0.125) at these sizes: 1 x 1, 2 x 2, 3 x 3, 5 x 7,
# 13 x 13, 14 x 10: four smaller than the finest level (6), odd and uneven ones.
CLASSIFIER_SIZES = [(32, 32), (47, 61), (64, 64), (97, 131), (224, 224), (250, 180)]
# Largest differences measured (2026-12-03): classifier 2.4e-7 (logits), Fast
# R-CNN 1.5e-5 and SPP-net 3.1e-5 (scores and boxes in pixels, up to ~300).
# Each bound leaves a 3-4x margin; the README quotes these bounds.
CLASSIFIER_TOLERANCE = 1e-6
DETECTOR_TOLERANCE = 1e-4


class _Pool(torch.nn.Module):
    def __init__(self, levels):
        super().__init__()
        self.levels = levels

    def forward(self, features, rois):
        return roi_spp(features, rois, self.levels)


def _random_rois(count, height, width, generator, images=1):
    # Corners anywhere from outside the map to past its end: clipped, inverted spans collapse.
    x = torch.randint(-3, width + 3, (count, 2), generator=generator)
    y = torch.randint(-3, height + 3, (count, 2), generator=generator)
    batch = torch.randint(0, images, (count,), generator=generator)
    return torch.stack([batch, x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def _session_outputs(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy() for name, value in feeds.items()})


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return SPPClassifier(build_backbone("zf5", 0.125), 5, hidden=32).eval()


def _classifier_cases(classifier):
    generator = torch.Generator().manual_seed(3)
    cases = [{"image": torch.randn(2 if h == w else 1, 3, h, w, generator=generator)} for h, w in CLASSIFIER_SIZES]
    with torch.no_grad():
        maps = [tuple(classifier.trunk(case["image"]).shape[-2:]) for case in cases]
        references = [[classifier(case["image"])] for case in cases]
    assert maps == [(1, 1), (2, 2), (3, 3), (5, 7), (13, 13), (14, 10)]
    return cases, references


# The test traces the op itself, with the tracing API torch has deprecated (export.py filters the same warnings).
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_traced_roi_spp_equals_the_numba_kernel_on_random_maps_and_rois():
    levels = (6, 3, 2, 1)
    generator = torch.Generator().manual_seed(0)
    example = (torch.randn(2, 4, 9, 11, generator=generator), _random_rois(5, 9, 11, generator, images=2))
    traced = {kind: torch.jit.trace(_Pool(levels), (example[0], example[1].to(kind)), check_trace=False)
              for kind in (torch.long, torch.float32)}
    for height, width in [(1, 1), (2, 3), (5, 1), (6, 6), (7, 13), (13, 13), (31, 17)]:
        features = torch.randn(2, 4, height, width, generator=generator)
        rois = _random_rois(40, height, width, generator, images=2)
        expected = roi_spp(features, rois, levels)
        assert torch.equal(traced[torch.long](features, rois), expected)
        # Float RoIs round half up, as the numba path does.
        halves = rois.float() + torch.tensor([0.0, 0.5, -0.5, 0.49, 0.51])
        assert torch.equal(traced[torch.float32](features, halves), roi_spp(features, halves, levels))


# Spans where float32 bin edges (torchvision's roi_pool, ONNX Runtime's
# MaxRoiPool at n x n) are off by one: level 7 at 57 cells (the last bin takes
# cell 57, outside the RoI), 11 at 29, 13 at 7, 14 at 62 (a bin starts a cell
# early); see the module docstring of sppnet.ops.roi_spp.
FLOAT_TRAPS = ((57, 7), (29, 11), (7, 13), (62, 14), (114, 7))


def test_float_bin_edges_of_roi_pool_are_off_by_one_where_ours_are_not():
    from torchvision.ops import roi_pool

    from sppnet.ops.roi_spp import _torchvision_spp

    for span, n in FLOAT_TRAPS:
        features = torch.eye(span + 1).reshape(1, span + 1, span + 1, 1)  # one-hot: channel c is cell c
        rois = torch.tensor([[0, 0, 0, 0, span - 1]])  # the first `span` rows of a map one row taller
        expected = roi_spp(features, rois, (n,))
        assert not expected.reshape(span + 1, n, n)[span].any()  # ours never leaves the RoI
        assert not torch.equal(roi_pool(features, rois.float(), (n, n), 1.0).flatten(1), expected)
        assert torch.equal(_torchvision_spp(features, rois, (n,)), expected)


def test_onnx_max_roi_pool_path_gives_exactly_the_bins_of_the_integer_rule(tmp_path):
    # One channel per cell, one-hot: the pooled value of channel c in a bin is
    # 1 exactly when cell c belongs to the bin, so equal outputs mean equal
    # bins. Every span 1..64 at several offsets, along rows and along columns,
    # at the levels of the float traps and SPP-net's.
    levels = (14, 13, 11, 7, 6, 3, 2, 1)
    size = 70
    path = export_module(_Pool(levels), tmp_path / "pool.onnx", "onnx",
                         (torch.zeros(1, 3, 4, 4), torch.tensor([[0.0, 0, 0, 3, 3]])), ["features", "rois"], ["pooled"],
                         {"features": {0: "n", 1: "c", 2: "h", 3: "w"}, "rois": {0: "r"}, "pooled": {0: "r"}})
    spans = torch.arange(1, 65)
    starts = torch.cat([torch.zeros_like(spans), torch.ones_like(spans), torch.full_like(spans, 5)])
    ends = starts + spans.repeat(3) - 1
    zeros = torch.zeros_like(starts)
    for rows in (True, False):
        shape = (size, 1) if rows else (1, size)
        features = torch.eye(size).reshape(1, size, *shape)
        rois = torch.stack([zeros, zeros, starts, zeros, ends] if rows else [zeros, starts, zeros, ends, zeros], 1)
        (pooled,) = _session_outputs(path, {"features": features, "rois": rois.float()})
        assert np.array_equal(pooled, roi_spp(features, rois, levels).numpy())
    # Random values, several images, RoIs partly outside small and odd maps.
    generator = torch.Generator().manual_seed(1)
    for height, width in [(1, 1), (2, 3), (3, 2), (5, 7), (13, 13), (23, 40)]:
        features = torch.randn(3, 8, height, width, generator=generator)
        rois = _random_rois(30, height, width, generator, images=3)
        (pooled,) = _session_outputs(path, {"features": features, "rois": rois.float()})
        assert np.array_equal(pooled, roi_spp(features, rois, levels).numpy())


@pytest.mark.parametrize("format, check", [("onnx", check_onnx), ("torchscript", check_torchscript)])
def test_classifier_export_matches_pytorch_at_every_size(classifier, tmp_path, format, check):
    path = export_classifier(classifier, tmp_path / f"classifier.{format}", format, example_size=(64, 64))
    cases, references = _classifier_cases(classifier)
    assert check(path, cases, references) <= CLASSIFIER_TOLERANCE


def test_onnx_classifier_graph_pools_with_max_roi_pool_not_adaptive_pooling(classifier, tmp_path):
    import onnx

    path = export_classifier(classifier, tmp_path / "classifier.onnx")
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert "MaxRoiPool" in ops and not any("Adaptive" in op for op in ops)
    image = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in image] == ["batch", "", "height", "width"]


def _tiny_fast_rcnn(scale=96):
    torch.manual_seed(0)
    classifier = SPPClassifier(build_backbone("zf5", 0.125), 3, levels=(6,), hidden=32, dropout=0.0)
    head = FastRCNNHead(classifier.fc6, classifier.fc7, 4)
    with torch.no_grad():  # larger than the training init, so regression moves boxes visibly
        head.cls_score.weight.normal_(std=0.3)
        head.bbox_pred.weight.normal_(std=0.05)
    return FastRCNN(classifier.trunk, head, (6,), scales=(scale,), max_side=None).eval()


def _detector_cases(seed=0):
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for (height, width), count in (((96, 128), 30), ((61, 97), 5), ((130, 75), 1), ((33, 40), 12)):
        corners = torch.rand(count, 2, 2, generator=generator) * torch.tensor([width, height])
        low, high = corners.min(1).values, corners.max(1).values
        boxes = torch.cat([low, torch.maximum(high, low + 2)], 1)
        if count > 1:  # the whole image: regression pushes it out, so clipping shows
            boxes[-1] = torch.tensor([0.0, 0.0, width, height])
        cases.append({"image": torch.randn(1, 3, height, width, generator=generator), "boxes": boxes})
    return cases


@pytest.mark.parametrize("format, check", [("onnx", check_onnx), ("torchscript", check_torchscript)])
def test_fast_rcnn_scoring_export_matches_pytorch(tmp_path, format, check):
    scoring = FastRCNNScoring(_tiny_fast_rcnn()).eval()
    path = export_detector(scoring, tmp_path / f"fast_rcnn.{format}", format)
    cases = _detector_cases()
    with torch.no_grad():
        references = [list(scoring(case["image"], case["boxes"])) for case in cases]
    assert references[0][1].shape == (30, 4, 4)
    assert check(path, cases, references) <= DETECTOR_TOLERANCE


def test_fast_rcnn_scoring_graph_is_the_models_score_at_one_scale():
    # An image whose shorter side is the test scale is not resized, so the
    # model's own scoring (normalise, conv, pool, head, decode, clip) must
    # equal the exported graph's computation on the normalised image.
    model = _tiny_fast_rcnn(scale=90)
    image = torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(5))
    boxes = _detector_cases(seed=2)[0]["boxes"] * 0.9
    probabilities, per_class = model.score(image, boxes)
    with torch.no_grad():
        scores, pred_boxes = FastRCNNScoring(model)(normalise(image)[None], boxes)
    assert torch.allclose(scores, probabilities, atol=1e-6) and torch.allclose(pred_boxes, per_class, atol=1e-5)
    assert not torch.allclose(pred_boxes[:, 1], boxes, atol=0.5)  # regression did move the boxes


def _tiny_sppnet_scoring(scorer: str = "svm"):
    from sppnet.models.detection.sppnet import SPPNet, SPPNetHead
    from sppnet.models.box_regression import BoxRegressors
    from sppnet.models.svm import LinearSVMs

    torch.manual_seed(1)
    classifier = SPPClassifier(build_backbone("zf5", 0.125), 3, hidden=32, dropout=0.0)
    head = SPPNetHead(classifier.fc6, classifier.fc7, 4)
    pooled_size = classifier.trunk.out_channels * 50
    svms = LinearSVMs(torch.randn(3, 32) * 0.1, torch.randn(3))
    # Deltas of a few tenths, as trained regressors give (the float32 error of
    # a regressed coordinate grows with its delta and the box's size).
    regressors = BoxRegressors(torch.randn(4, pooled_size + 1, 4) * 0.003, 0.5)
    model = SPPNet(classifier.trunk, (6, 3, 2, 1), head.eval(), svms, 2.0, regressors, (96,), None, 224.0, 0.3, 100,
                   scorer)
    return SPPNetScoring(model).eval(), regressors


@pytest.mark.parametrize("scorer", ["svm", "softmax"])
def test_sppnet_scoring_graph_matches_the_library_and_exports(scorer, tmp_path):
    scoring, regressors = _tiny_sppnet_scoring(scorer)
    case = _detector_cases(seed=4)[0]
    with torch.no_grad():
        scores, pred_boxes = scoring(case["image"], case["boxes"])
        model = scoring.model
        features = model.trunk(case["image"])
        rois = boxes_to_rois([case["boxes"]], model.trunk.geometry, "sppnet", feature_size=features.shape[-2:])
        pooled = roi_spp(features, rois, (6, 3, 2, 1))
        if scorer == "svm":
            expected = model.svms.decision_function(model.head.features(pooled) * 2.0)
        else:  # the fine-tuned fc8's probabilities of the 3 object classes (output 0 is background)
            expected = torch.softmax(model.head(pooled), dim=1)[:, 1:]
    assert torch.allclose(scores, expected, atol=1e-6)
    for label in (1, 2, 3):
        labels = torch.full((len(pooled),), label)
        moved = clip_boxes(regressors.apply(pooled, case["boxes"], labels), case["image"].shape[-2:])
        assert torch.allclose(pred_boxes[:, label - 1], moved, atol=1e-4)
    path = export_detector(scoring, tmp_path / "sppnet.onnx", "onnx")
    cases = _detector_cases(seed=6)
    with torch.no_grad():
        references = [list(scoring(c["image"], c["boxes"])) for c in cases]
    assert check_onnx(path, cases, references) <= DETECTOR_TOLERANCE


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-cli")
    assert main(["data", "synth", "--task", "classify", "--out", str(root / "data"), "--train", "8", "--test", "4"]) == 0
    sets = ["model.width=0.125", "model.hidden=32", "train.epochs=1", "train.min_iterations=0", "train.batch_size=8",
            "train.resize=72", "train.crop=64", "train.second_size=48", "pretrain.generic_images=0"]
    args = ["train", "classify", "--data", str(root / "data"), "--out", str(root / "run"), "--config", "classify-tiny",
            "--no-progress"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    return root / "run"


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_cli_exports_a_classification_run_and_reports_parity(classify_run, tmp_path, capsys, format):
    out = tmp_path / f"model.{format}"
    assert main(["export", "--run", str(classify_run), "--format", format, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max abs difference" in printed and "(1, 3, 49, 83)" in printed
    diff = float(printed.split("max abs difference ")[1].split()[0])
    assert diff <= CLASSIFIER_TOLERANCE


def _detector_run(method, classify_run, run):
    """A finished run folder of ``method`` as its trainer leaves it, with
    untrained heads (the export does not care how good they are)."""
    from sppnet.config import to_dict
    from sppnet.engine.checkpoint import save_weights
    from sppnet.engine.classification import load_classifier

    run.mkdir()
    classes = ["__background__", "circle", "square"]
    classifier = load_classifier(classify_run)[0]
    if method == "fast-rcnn":
        from sppnet.engine.fast_rcnn import FastRCNNConfig, build_fast_rcnn

        config = FastRCNNConfig(scales=(80,), max_side=None)
        save_weights(run / "model.safetensors", build_fast_rcnn(classifier, len(classes), config).state_dict())
    else:
        from sppnet.engine.sppnet_detection import SPPNetConfig
        from sppnet.models.detection.sppnet import SPPNetHead

        config = SPPNetConfig(scales=(80,))
        head = SPPNetHead(classifier.fc6, classifier.fc7, len(classes))
        pooled = classifier.fc6[0].in_features
        save_weights(run / "finetune.safetensors", head.state_dict())
        save_weights(run / "svm.safetensors", {"weight": torch.randn(2, head.fc7[0].out_features) * 0.1,
                                               "bias": torch.zeros(2), "scale": torch.tensor(1.5)})
        save_weights(run / "bbox.safetensors", {"weights": torch.randn(3, pooled + 1, 4) * 0.003,
                                                "scale": torch.tensor(0.5)})
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    (run / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (run / "backbone.txt").write_text(f"{classify_run.resolve()}\n")
    return run


@pytest.mark.parametrize("method, classes", [("fast-rcnn", 3), ("sppnet", 2)])
def test_cli_exports_detector_run_folders(classify_run, tmp_path, capsys, method, classes):
    import onnx

    run = _detector_run(method, classify_run, tmp_path / method)
    out = tmp_path / "detector.onnx"
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{method} run" in printed and float(printed.split("max abs difference ")[1].split()[0]) <= DETECTOR_TOLERANCE
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image", "boxes"]
    assert [o.name for o in graph.output] == ["scores", "pred_boxes"]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    scores, boxes = session.run(None, {"image": np.zeros((1, 3, 77, 90), np.float32),
                                       "boxes": np.array([[1, 2, 50, 60], [0, 0, 90, 77], [5, 5, 9, 9]], np.float32)})
    assert scores.shape == (3, classes) and boxes.shape == (3, classes, 4)


def test_cli_export_errors_name_the_problem(tmp_path, capsys):
    from sppnet.config import to_dict
    from sppnet.engine.rcnn import RCNNConfig

    assert main(["export", "--run", str(tmp_path / "missing"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "missing" in capsys.readouterr().err
    rcnn = tmp_path / "rcnn"
    rcnn.mkdir()
    (rcnn / "config.yaml").write_text(yaml.safe_dump(to_dict(RCNNConfig()), sort_keys=False))
    assert main(["export", "--run", str(rcnn), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    error = capsys.readouterr().err
    assert "rcnn run" in error and "Fast R-CNN and SPP-net" in error
    with pytest.raises(ValueError, match="R-CNN"):
        from sppnet.export import scoring_module

        scoring_module(object())
