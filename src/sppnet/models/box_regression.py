"""Class-specific linear box regression (R-CNN / SPP-net, SPEC section 4.4).

Shapes: N training windows, D feature size, K object classes.

For each class, ridge regression from a window's (norm-scaled) pool5 features
to the deltas that move it onto its ground truth (``BoxCoder`` with unit
stds): W = argmin ||[X 1] W - T||^2 + lambda ||W||^2, bias included in the
penalty as in the authors' code. Trained on windows with IoU > 0.5 (R-CNN:
0.6); lambda 4000 (R-CNN: 1000).

The penalty weighs against a sum over the training windows, so a lambda set
on one dataset is not the same prior on a set with fewer windows. With
``ridge_choices`` lambda is instead chosen among those values by
cross-validation over the training images (all windows of an image in one
fold: windows of one object share its target, and a split inside an image
would reward fitting them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sppnet.ops import BoxCoder

__all__ = ["BoxRegressorConfig", "BoxRegressors", "choose_ridge", "fit_box_regressors"]


@dataclass(frozen=True)
class BoxRegressorConfig:
    ridge: float = 4000.0  # lambda (SPP-net code); R-CNN used 1000
    min_overlap: float = 0.5  # train on windows with IoU above this
    feature_norm: float = 20.0  # rows scaled to this mean L2 norm, as for the SVMs
    # Not empty: lambda is the one of these with the lowest held-out squared error of the
    # deltas over ridge_folds folds of the training images (``ridge`` is then unused).
    ridge_choices: tuple[float, ...] = ()
    ridge_folds: int = 3

    def __post_init__(self) -> None:
        for value in (self.ridge, *self.ridge_choices):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"bbox.ridge and bbox.ridge_choices must be positive numbers, got {value!r}")
        if isinstance(self.ridge_folds, bool) or not isinstance(self.ridge_folds, int) or self.ridge_folds < 2:
            raise ValueError(f"bbox.ridge_folds must be an integer >= 2, got {self.ridge_folds!r}")


@dataclass
class BoxRegressors:
    """weights (K+1, D + 1, 4): row 0 unused (background); last input row is the bias.
    ``ridge``: the lambda they were fitted with; ``held_out_errors``: when it was
    chosen by cross-validation, each candidate's summed held-out squared error."""

    weights: torch.Tensor
    feature_scale: float
    ridge: float | None = None
    held_out_errors: dict[float, float] | None = None

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


def _held_out_errors(x_train: torch.Tensor, t_train: torch.Tensor, x_val: torch.Tensor, t_val: torch.Tensor,
                     ridges: Sequence[float]) -> torch.Tensor:
    """Summed squared error on (x_val, t_val) of the ridge solution fitted on
    (x_train, t_train), for each lambda of ``ridges``: one eigendecomposition
    of the smaller Gram matrix serves them all (x^T x = V diag(s) V^T gives
    (x^T x + lambda I)^-1 = V diag(1 / (s + lambda)) V^T, and likewise x x^T
    in the dual form)."""
    count, dim = x_train.shape
    if count < dim:
        eigenvalues, vectors = torch.linalg.eigh(x_train @ x_train.T)
        left, right = x_val @ (x_train.T @ vectors), vectors.T @ t_train
    else:
        eigenvalues, vectors = torch.linalg.eigh(x_train.T @ x_train)
        left, right = x_val @ vectors, vectors.T @ (x_train.T @ t_train)
    eigenvalues = eigenvalues.clamp_min(0)
    return torch.stack([((left @ (right / (eigenvalues + ridge)[:, None]) - t_val) ** 2).sum() for ridge in ridges])


def _class_problems(features, boxes, targets, labels, overlaps, num_classes, config, feature_scale):
    """Per object class with training windows: (label, chosen mask, x with a bias column, delta targets)."""
    keep = overlaps > config.min_overlap
    coder = BoxCoder()
    for label in range(1, num_classes):
        chosen = keep & (labels == label)
        if not bool(chosen.any()):
            continue
        x = torch.cat([features[chosen].double() * feature_scale, torch.ones(int(chosen.sum()), 1, dtype=torch.float64)], 1)
        yield label, chosen, x, coder.encode(boxes[chosen].double(), targets[chosen].double())


def choose_ridge(
    features: torch.Tensor, boxes: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, overlaps: torch.Tensor,
    groups: torch.Tensor, num_classes: int, config: BoxRegressorConfig, feature_scale: float = 1.0,
) -> tuple[float, dict[float, float]]:
    """The lambda of ``config.ridge_choices`` with the lowest held-out squared
    error of the deltas, summed over the object classes and
    ``config.ridge_folds`` folds; ``groups`` (N,) names each window's image,
    and an image's windows stay in one fold (images in sorted order go to
    folds 0, 1, ..., folds - 1, 0, ...). Ties go to the larger lambda.
    Returns the lambda and each candidate's error."""
    choices = sorted({float(value) for value in config.ridge_choices}, reverse=True)
    images, index = torch.unique(groups, return_inverse=True)
    fold = index % config.ridge_folds
    errors = torch.zeros(len(choices), dtype=torch.float64)
    for _, chosen, x, t in _class_problems(features, boxes, targets, labels, overlaps, num_classes, config,
                                           feature_scale):
        window_fold = fold[chosen]
        for held_out in range(config.ridge_folds):
            val = window_fold == held_out
            if bool(val.any()) and not bool(val.all()):
                errors += _held_out_errors(x[~val], t[~val], x[val], t[val], choices)
    best = int(torch.argmin(errors))  # the first minimum: the largest lambda among equals
    return choices[best], dict(zip(choices, errors.tolist()))


def fit_box_regressors(
    features: torch.Tensor, boxes: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, overlaps: torch.Tensor,
    num_classes: int, config: BoxRegressorConfig = BoxRegressorConfig(), feature_scale: float = 1.0,
    groups: torch.Tensor | None = None,
) -> BoxRegressors:
    """features (N, D) pool5 of windows ``boxes`` (N, 4) whose max-IoU ground
    truth is ``targets`` (N, 4) of class ``labels`` (N,) with IoU ``overlaps``;
    classes without training windows keep zero weights (no movement).
    ``groups`` (N,): each window's image, needed when ``config.ridge_choices``
    is set (lambda chosen by :func:`choose_ridge`)."""
    dim = features.shape[1]
    weights = torch.zeros(num_classes, dim + 1, 4, dtype=torch.float64)
    ridge, errors = config.ridge, None
    if config.ridge_choices:
        if groups is None:
            raise ValueError("bbox.ridge_choices needs each window's image (groups) for its cross-validation")
        ridge, errors = choose_ridge(features, boxes, targets, labels, overlaps, groups, num_classes, config,
                                     feature_scale)
    for label, _, x, t in _class_problems(features, boxes, targets, labels, overlaps, num_classes, config,
                                          feature_scale):
        weights[label] = _ridge(x, t, ridge)
    return BoxRegressors(weights.float(), feature_scale, ridge, errors)
