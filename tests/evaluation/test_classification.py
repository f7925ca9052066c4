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
