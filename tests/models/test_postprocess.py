import torch

from sppnet.models.box_regression import BoxRegressors
from sppnet.models.detection.postprocess import MirrorView, postprocess


def _shift_right(dx: float, features: int = 3) -> BoxRegressors:
    """Regressors (1 class) that move every window right by ``dx`` of its width, whatever its features."""
    weights = torch.zeros(2, features + 1, 4)
    weights[1, -1, 0] = dx  # the bias row, delta x
    return BoxRegressors(weights, feature_scale=1.0)


def test_flip_testing_averages_scores_before_nms_and_regressed_boxes_after_it():
    boxes = torch.tensor([[10.0, 10.0, 30.0, 40.0], [60.0, 20.0, 90.0, 50.0]])
    scores = torch.tensor([[0.8], [0.2]])
    features = torch.zeros(2, 3)
    mirror = MirrorView(torch.tensor([[0.4], [0.6]]), lambda window: features[window], width=100.0)
    plain = postprocess(boxes, scores, (80, 100), nms=0.3, top_k=10, regressors=_shift_right(0.25),
                        regression_features=lambda window: features[window])
    # One view: each window moves right by a quarter of its width, scores as given.
    torch.testing.assert_close(plain["scores"], torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(plain["boxes"], torch.tensor([[15.0, 10.0, 35.0, 40.0], [67.5, 20.0, 97.5, 50.0]]))
    both = postprocess(boxes, scores, (80, 100), nms=0.3, top_k=10, regressors=_shift_right(0.25),
                       regression_features=lambda window: features[window], mirror=mirror)
    # Scores averaged (0.6, 0.4); "right" in the mirror is left in the image, so the
    # two regressed boxes average back to the window itself.
    torch.testing.assert_close(both["scores"], torch.tensor([0.6, 0.4]))
    torch.testing.assert_close(both["boxes"], boxes)
    assert both["labels"].tolist() == [1, 1]  # object classes count from 1


def test_flip_averaged_scores_decide_what_nms_keeps():
    # Two overlapping windows: the first wins alone, the second once the mirror's scores are averaged in.
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [2.0, 2.0, 42.0, 42.0]])
    features = torch.zeros(2, 3)
    scores = torch.tensor([[0.6], [0.5]])
    alone = postprocess(boxes, scores, (50, 50), 0.3, 10, None, lambda w: features[w])
    assert torch.equal(alone["boxes"], boxes[:1])
    mirror = MirrorView(torch.tensor([[0.2], [0.9]]), lambda w: features[w], width=50.0)
    both = postprocess(boxes, scores, (50, 50), 0.3, 10, None, lambda w: features[w], mirror=mirror)
    assert torch.equal(both["boxes"], boxes[1:])
    torch.testing.assert_close(both["scores"], torch.tensor([0.7]))


def test_box_voting_moves_kept_boxes_to_the_weighted_mean_of_regressed_windows():
    boxes = torch.tensor([[10.0, 10.0, 30.0, 40.0], [12.0, 10.0, 32.0, 40.0], [60.0, 20.0, 90.0, 50.0]])
    scores = torch.tensor([[0.6], [0.2], [0.5]])
    features = torch.zeros(3, 3)
    kwargs = dict(nms=0.3, top_k=10, regressors=_shift_right(0.25), regression_features=lambda w: features[w])
    plain = postprocess(boxes, scores, (80, 100), **kwargs)
    # NMS keeps windows 0 and 2, each moved right by 5 and 7.5 (a quarter of its width).
    torch.testing.assert_close(plain["boxes"], torch.tensor([[15.0, 10.0, 35.0, 40.0], [67.5, 20.0, 97.5, 50.0]]))
    # Only identical boxes vote at IoU 1: what voting adds (every window regressed at once) changes nothing.
    torch.testing.assert_close(postprocess(boxes, scores, (80, 100), box_vote=1.0, **kwargs)["boxes"], plain["boxes"])
    voted = postprocess(boxes, scores, (80, 100), box_vote=0.5, **kwargs)
    # Window 1, regressed to [17, 10, 37, 40], overlaps window 0's [15, 10, 35, 40] at 18 / 22:
    # x = (0.6 * 15 + 0.2 * 17) / 0.8 = 15.5; window 2 votes alone.
    torch.testing.assert_close(voted["boxes"], torch.tensor([[15.5, 10.0, 35.5, 40.0], [67.5, 20.0, 97.5, 50.0]]))
    torch.testing.assert_close(voted["scores"], plain["scores"])
    # With flip testing every window's two regressions are averaged, as for the kept ones: back to the windows.
    mirror = MirrorView(scores, lambda w: features[w], width=100.0)
    flipped = postprocess(boxes, scores, (80, 100), box_vote=0.5, mirror=mirror, **kwargs)
    torch.testing.assert_close(flipped["boxes"], torch.tensor([[10.5, 10.0, 30.5, 40.0], [60.0, 20.0, 90.0, 50.0]]))


def test_regress_first_runs_nms_over_each_class_regressed_windows():
    # Two 20 x 30 windows 10 px apart in x (IoU 300 / 900 = 1/3: NMS at 0.5 keeps both)
    # that the regressors move onto one another: the first right by half its width, the
    # second not at all (the regressor reads the feature).
    boxes = torch.tensor([[10.0, 10.0, 30.0, 40.0], [20.0, 10.0, 40.0, 40.0]])
    scores = torch.tensor([[0.9], [0.6]])
    features = torch.tensor([[1.0], [0.0]])
    weights = torch.zeros(2, 2, 4)
    weights[1, 0, 0] = 0.5  # delta x = 0.5 * feature
    regressors = BoxRegressors(weights, feature_scale=1.0)
    kwargs = dict(nms=0.5, top_k=10, regressors=regressors, regression_features=lambda w: features[w])
    plain = postprocess(boxes, scores, (80, 100), **kwargs)
    # NMS over the proposals keeps both; each is then regressed: the first onto the second.
    torch.testing.assert_close(plain["boxes"], torch.tensor([[20.0, 10.0, 40.0, 40.0], [20.0, 10.0, 40.0, 40.0]]))
    torch.testing.assert_close(plain["scores"], torch.tensor([0.9, 0.6]))
    first = postprocess(boxes, scores, (80, 100), regress_first=True, **kwargs)
    # NMS over the regressed boxes: the two are one box, the better-scored kept.
    torch.testing.assert_close(first["boxes"], torch.tensor([[20.0, 10.0, 40.0, 40.0]]))
    torch.testing.assert_close(first["scores"], torch.tensor([0.9]))
    assert first["labels"].tolist() == [1]
    # Without regressors the option changes nothing.
    torch.testing.assert_close(postprocess(boxes, scores, (80, 100), 0.5, 10, None, None, regress_first=True)["boxes"],
                               boxes)
