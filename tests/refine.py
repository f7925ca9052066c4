"""What iterative localisation promises for the staged detectors (SPP-net,
R-CNN; ``test.refine`` with ``test.regress_first``): the detections of
every window and each class's best windows regressed and scored again, NMS
over each class's regressed boxes, as a reference computes them at once."""

import torch

from sppnet.ops import class_nms, clip_boxes


def assert_refined_as_reference(detector, record, proposals: torch.Tensor, scored, windows: int = 20) -> None:
    """``scored(boxes) -> (pool5 (R, C * B), scores (R, K))``: the
    reference's scoring of windows all at once. The detector scores the
    regressed windows as a second set, in blocks; the detections must agree."""
    model = detector.model
    size = (record.height, record.width)
    pooled, scores = scored(proposals)
    classes = scores.shape[1]
    moved = torch.cat([clip_boxes(model.regressors.apply(pooled[best], proposals[best],
                                                         torch.full((windows,), k + 1)), size)
                       for k in range(classes) for best in [scores[:, k].topk(windows).indices]])
    moved = moved[(moved[:, 2] - moved[:, 0] >= 1) & (moved[:, 3] - moved[:, 1] >= 1)]
    moved_pooled, moved_scores = scored(moved)
    every, every_pooled = torch.cat([proposals, moved]), torch.cat([pooled, moved_pooled])
    regressed = torch.stack([clip_boxes(model.regressors.apply(every_pooled, every, torch.full((len(every),), k + 1)),
                                        size) for k in range(classes)], 1)
    _, labels, boxes, kept_scores = class_nms(regressed, torch.cat([scores, moved_scores]), detector.test.nms,
                                              detector.test.top_k)
    detector.set_refine(windows)  # what `sppnet eval detect --refine N` calls
    model.regress_first = True
    try:
        out = detector.detect(record, proposals)
    finally:
        detector.set_refine(0)
        model.regress_first = False
    assert torch.equal(out["labels"], labels)
    torch.testing.assert_close(out["scores"], kept_scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["boxes"], boxes, rtol=1e-5, atol=1e-3)
    assert len(moved) > 0.9 * windows * classes  # the regressed windows were scored, not dropped
