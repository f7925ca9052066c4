"""Class-specific linear box regression (R-CNN / SPP-net, SPEC section 4.4).

Shapes: N training windows, D feature size, K object classes.

For each class, ridge regression from a window's (norm-scaled) pool5 features
to the deltas that move it onto its ground truth (``BoxCoder`` with unit
stds): W = argmin ||[X 1] W - T||^2 + lambda ||W||^2, bias included in the
penalty as in the authors' code. Trained on windows with IoU > 0.5 (R-CNN:
0.6); lambda 4000 (R-CNN: 1000).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sppnet.ops import BoxCoder

__all__ = ["BoxRegressorConfig", "BoxRegressors", "fit_box_regressors"]


@dataclass(frozen=True)
class BoxRegressorConfig:
    ridge: float = 4000.0  # lambda (SPP-net code); R-CNN used 1000
    min_overlap: float = 0.5  # train on windows with IoU above this
    feature_norm: float = 20.0  # rows scaled to this mean L2 norm, as for the SVMs


@dataclass
class BoxRegressors:
    """weights (K+1, D + 1, 4): row 0 unused (background); last input row is the bias."""

    weights: torch.Tensor
    feature_scale: float

    def predict_deltas(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Deltas (R, 4) of each window for its class ``labels`` (R,)."""
        x = torch.cat([features * self.feature_scale, torch.ones(len(features), 1)], 1)
        return torch.einsum("rd,rdk->rk", x, self.weights[labels])

    def apply(self, features: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return BoxCoder().decode(self.predict_deltas(features, labels), boxes)

    def all_classes(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Every window regressed by every object class's regressor: ``(R, K,
        4)``, column k - 1 for class k. One matrix product with tensor ops
        only, so a traced graph (export) keeps R dynamic."""
        classes, inputs, _ = self.weights.shape
        # Column 4 (k - 1) + j is coordinate j of class k; the last input row is the bias.
        stacked = self.weights[1:].float().permute(1, 0, 2).reshape(inputs, 4 * (classes - 1))
        deltas = torch.addmm(stacked[-1], features * self.feature_scale, stacked[:-1])
        return BoxCoder().decode(deltas, boxes).reshape(-1, classes - 1, 4)


def _ridge(x: torch.Tensor, t: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_W ||x W - t||^2 + ridge ||W||^2 for x (N, D), t (N, 4) -> (D, 4).

    Solved in whichever of the two equal forms is smaller: the primal
    (x^T x + ridge I_D)^-1 x^T t, or, with fewer windows than features (a
    12,800-d pool5 and a few hundred windows), the dual x^T (x x^T + ridge
    I_N)^-1 t, an N x N system instead of a D x D one."""
    count, dim = x.shape
    if count < dim:
        gram = x @ x.T + ridge * torch.eye(count, dtype=x.dtype)
        return x.T @ torch.linalg.solve(gram, t)
    gram = x.T @ x + ridge * torch.eye(dim, dtype=x.dtype)
    return torch.linalg.solve(gram, x.T @ t)


def fit_box_regressors(
    features: torch.Tensor, boxes: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, overlaps: torch.Tensor,
    num_classes: int, config: BoxRegressorConfig = BoxRegressorConfig(), feature_scale: float = 1.0,
) -> BoxRegressors:
    """features (N, D) pool5 of windows ``boxes`` (N, 4) whose max-IoU ground
    truth is ``targets`` (N, 4) of class ``labels`` (N,) with IoU ``overlaps``;
    classes without training windows keep zero weights (no movement)."""
    dim = features.shape[1]
    weights = torch.zeros(num_classes, dim + 1, 4, dtype=torch.float64)
    keep = overlaps > config.min_overlap
    coder = BoxCoder()
    for label in range(1, num_classes):
        chosen = keep & (labels == label)
        if not bool(chosen.any()):
            continue
        x = torch.cat([features[chosen].double() * feature_scale, torch.ones(int(chosen.sum()), 1, dtype=torch.float64)], 1)
        t = coder.encode(boxes[chosen].double(), targets[chosen].double())
        weights[label] = _ridge(x, t, config.ridge)
    return BoxRegressors(weights.float(), feature_scale)
