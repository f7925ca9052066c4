"""How SPP-net and R-CNN turn a window's fc7 into class scores.

The papers score with per-class linear SVMs trained on fc7 (ground-truth
positives, hard negatives); the R-CNN paper's ablation (appendix B) and Fast
R-CNN score with the softmax of the (K+1)-way fc8 fine-tuned on the windows.
Both are kept: ``test.scorer`` in a detector's config, ``--scorer`` in
``sppnet eval detect``.
"""

from __future__ import annotations

import torch

from sppnet.models.svm import LinearSVMs

__all__ = ["SCORERS", "check_scorer", "window_scores"]

SCORERS = ("svm", "softmax")


def check_scorer(scorer: str) -> str:
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    return scorer


def window_scores(fc7: torch.Tensor, scorer: str, svms: LinearSVMs | None, svm_scale: float,
                  fc8: torch.nn.Linear) -> torch.Tensor:
    """``(R, K)`` class scores of windows' fc7 features ``(R, H)``: SVM
    decision values of the features times ``svm_scale``, or the softmax
    probabilities of the K object classes (fc8's output 0 is background)."""
    if check_scorer(scorer) == "softmax":
        return torch.softmax(fc8(fc7.to(fc8.weight.dtype)).float(), dim=1)[:, 1:]
    if svms is None:
        raise ValueError("this detector has no SVMs yet (its SVM stage has not run); score with the softmax")
    return svms.decision_function(fc7 * svm_scale)
