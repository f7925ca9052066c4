"""Region proposals: selective search, edge boxes or a dense grid, cached on disk.

The one home of proposals (issue 15): the methods (``methods``), their
settings (``config``), the on-disk cache (``cache``) and computing them for a
dataset (``compute``); ``selective_search`` is sppnet's grouping loop.

Shapes and names::

    H, W   the image's height and width in pixels (as displayed)
    P      proposals of one image
    boxes  Tensor[P, 4] float32, xyxy, 0-based continuous pixels of the
           ORIGINAL image (DESIGN "Conventions"), clipped to [0, W] x [0, H]

Public API (importable from ``sppnet.proposals``):

* :class:`ProposalConfig`: which method and its settings; ``key()`` is a short
  hash of every setting that changes the boxes (it names the cache folder).
* :func:`propose`: one image (``np.ndarray[H, W, 3]`` uint8 RGB) -> boxes.
* :class:`ProposalCache` (and :class:`CachedProposals`, a dataset's boxes read from it): one ``.npz`` per image under
  ``root/<method>-<key>/``, validated by the SHA-256 of the image file.
* :func:`compute_proposals`: a list of :class:`ImageRecord` -> :class:`ProposalRun`
  (boxes by image id, what was skipped and why, cache statistics), in worker
  processes when asked.
* :func:`proposal_recall`: the fraction of non-difficult ground-truth boxes
  covered by some proposal at IoU >= t.

Methods (SPEC section 5 uses selective search in fast mode, ~2000 boxes):

* ``selective-search-fast`` / ``selective-search-quality``: OpenCV's graph
  segmentation and similarity strategies (``cv2.ximgproc.segmentation``) grouped
  by :mod:`sppnet.proposals.selective_search`, on the image resized so that its
  shorter side is ``resize_to``, in the algorithm's ranking order. The ranking's
  random draws are sppnet's own, so the same image always gives the same list,
  in any thread or process.
* ``edge-boxes``: OpenCV's structured edge detector + EdgeBoxes. It needs the
  trained structured-edge model (OpenCV's ``model.yml.gz``), which sppnet does
  not ship and cannot download: the user supplies the file (``edge_model``).
* ``grid``: dense sliding windows (no image content used), deterministic.

Needs ``opencv-contrib-python-headless`` for the OpenCV methods (imported only
when one is used).
"""

from __future__ import annotations


from sppnet.proposals.cache import ProposalCache, safe_file_name
from sppnet.proposals.compute import CachedProposals, ProposalRun, compute_proposals, proposal_recall, stream_proposals
from sppnet.proposals.config import METHODS, ProposalConfig, ProposalSettings
from sppnet.proposals.methods import propose

__all__ = [
    "METHODS",
    "ProposalConfig",
    "ProposalSettings",
    "propose",
    "ProposalCache",
    "CachedProposals",
    "ProposalRun",
    "compute_proposals",
    "stream_proposals",
    "proposal_recall",
    "safe_file_name",
]
