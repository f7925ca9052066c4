"""What flip testing promises: a detector that scores each window in the image
and in its mirror is mirror-symmetric."""

import torch

from sppnet.ops import mirror_boxes


def assert_mirror_symmetric(out: dict, mirrored: dict, width: float, atol: float = 1e-3) -> None:
    """``mirrored``, the detections of the mirrored image (with mirrored
    windows), are ``out``'s mirrored: same labels and scores, boxes mirrored back."""
    assert torch.equal(out["labels"], mirrored["labels"])
    torch.testing.assert_close(mirrored["scores"], out["scores"])
    torch.testing.assert_close(mirror_boxes(mirrored["boxes"], width), out["boxes"], rtol=0, atol=atol)
