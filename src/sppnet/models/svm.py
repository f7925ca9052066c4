"""Linear SVMs on region features and one-pass hard negative mining (SPEC 4.3, 8).

Shapes and names: N feature rows, D feature dimensions, K classes (one binary
one-vs-rest SVM each), M rows of one image, P_k positives of class k.
``targets[i, k]`` is +1 (positive), -1 (negative) or 0 (row ``i`` plays no part
in class ``k``), so K classes with different training sets share one feature
matrix and are trained in one batched solve.

The problem (liblinear's convention, as in R-CNN and SPP-net): for each class,
with the bias feature ``B`` appended to every row, x~ = [x, B] and w~ = [w, v],

    min_w~  0.5 * ||w~||^2 + sum_i c_i * loss(1 - y_i * w~ . x~_i)

where ``c_i = C * positive_weight`` for positives and ``C`` for negatives, and
``loss(u) = max(0, u)`` (hinge, SPEC 4.3; liblinear ``-s 3``, R-CNN's choice)
or ``max(0, u)^2`` (squared hinge, liblinear ``-s 1/2``). The bias weight ``v``
is regularised like the others; the decision bias is ``b = v * B``.

Solver. One semismooth Newton-CG engine, batched over classes: every matrix
product is ``features @ [D, K]`` or ``features.T @ [N, K]``, so it runs on any
device with no loop over rows.

- squared hinge: the objective is C^1 and piecewise quadratic; Newton steps on
  the generalised Hessian ``I + X~^T diag(2 c_i [u_i > 0]) X~`` (solved by
  Jacobi-preconditioned CG) with an exact line search converge in a few tens of
  steps whatever N is (this is liblinear's primal method, ``-s 2``).
- hinge: not differentiable, so it is solved exactly by the augmented
  Lagrangian (proximal method of multipliers) on its dual: each outer step
  minimises the Moreau-smoothed (Huber-like) objective with the same Newton-CG,
  then moves the multipliers ``alpha_i in [0, c_i]`` (the SVM's dual variables).
  Unlike a fixed smoothing this converges to the hinge solution itself.

Both stop on a certified relative duality gap, ``P(w) - D(alpha) <= tol * P(w)``,
computed as a sum of non-negative terms (no cancellation in float32). Since P
is 1-strongly convex, ``||w - w*||^2 <= 2 * gap``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["SVMConfig", "LinearSVMs", "train_linear_svms", "feature_scale", "HardNegativeMiner"]

_LOSSES = ("hinge", "squared_hinge")
# Rows per block when forming the Jacobi preconditioner (bounds a temporary of
# _BLOCK_ELEMENTS elements, whatever N and D are).
_BLOCK_ELEMENTS = 2**24
# Hinge: multiplier penalty sigma starts at max_i c_i (a smoothing zone of about
# one margin unit), grows by _SIGMA_GROWTH per multiplier update, up to
# _SIGMA_MAX_FACTOR * max_i c_i.
_SIGMA_GROWTH = 10.0
_SIGMA_MAX_FACTOR = 1e4
# Hinge: move the multipliers once the inner gradient's share of the gap is at
# most this fraction of the complementarity part.
_INNER_FRACTION = 0.1


@dataclass(frozen=True)
class SVMConfig:
    """Settings of the linear SVM stage (SPEC 4.3); defaults are the paper's."""

    # Regularisation trade-off: weight of the summed losses against 0.5 * ||w||^2.
    C: float = 1e-3
    # Multiplies C for positive examples (class weight of +1; negatives weigh 1).
    positive_weight: float = 2.0
    # Constant appended to every feature row; its weight is regularised, and the
    # decision bias is that weight times bias_feature (liblinear's -B).
    bias_feature: float = 10.0
    # "hinge" (L1-loss SVM, SPEC 4.3 and R-CNN) or "squared_hinge" (L2-loss SVM).
    loss: str = "hinge"
    # Most Newton steps in one solve (each costs a few tens of matrix products).
    max_iter: int = 300
    # Stop when the duality gap is at most tol times the primal objective.
    tol: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("C", "positive_weight", "bias_feature", "tol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"SVMConfig.{name} must be a finite number > 0, got {value!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"SVMConfig.loss must be one of {_LOSSES}, got {self.loss!r}")
        if not isinstance(self.max_iter, int) or isinstance(self.max_iter, bool) or self.max_iter < 1:
            raise ValueError(f"SVMConfig.max_iter must be an int >= 1, got {self.max_iter!r}")
