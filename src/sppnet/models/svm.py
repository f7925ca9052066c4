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
# CG stops at a residual of _CG_FORCING * ||gradient|| or after _CG_MAX_ITER steps.
_CG_FORCING = 0.1
_CG_MAX_ITER = 250
# Line search: at most _LINE_SEARCH_ITER derivative evaluations; accept t once
# phi'(t) is in [_LINE_SEARCH_SLOPE * phi'(0), 0].
_LINE_SEARCH_ITER = 30
_LINE_SEARCH_SLOPE = 0.01


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


class LinearSVMs(nn.Module):
    """K linear scorers ``features @ weight.T + bias``; plain tensor buffers.

    ``weight``: Tensor[K, D]; ``bias``: Tensor[K] (the bias weight times the
    bias feature). The state dict holds exactly these two tensors, so the
    model saves to safetensors as is; to load, build one with tensors of the
    right shape and call ``load_state_dict``.
    """

    weight: Tensor
    bias: Tensor

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"weight must be [K, D], got shape {tuple(weight.shape)}")
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"bias must be [K] = [{weight.shape[0]}], got shape {tuple(bias.shape)}")
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    @classmethod
    def zeros(cls, num_classes: int, feature_dim: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> LinearSVMs:
        """All-zero scorers (every score 0), the model before any training."""
        return cls(torch.zeros(num_classes, feature_dim, dtype=dtype, device=device), torch.zeros(num_classes, dtype=dtype, device=device))

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.weight.shape[1]

    def decision_function(self, features: Tensor) -> Tensor:
        """Scores of every row for every class: Tensor[N, D] -> Tensor[N, K]."""
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"features must be [N, {self.feature_dim}], got shape {tuple(features.shape)}")
        weight = self.weight.to(features.dtype)
        return torch.addmm(self.bias.to(features.dtype), features, weight.T)

    def forward(self, features: Tensor) -> Tensor:
        """Same as ``decision_function``."""
        return self.decision_function(features)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feature_dim={self.feature_dim}"


def feature_scale(features: Tensor, target_norm: float = 20.0) -> float:
    """The factor that makes the mean L2 norm of the rows of ``features``
    (Tensor[N, D]) equal ``target_norm`` (SPEC 4.3: 20). Compute it once on
    training features and multiply training and test features by the same
    value."""
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty [N, D] tensor, got shape {tuple(features.shape)}")
    if not (math.isfinite(target_norm) and target_norm > 0):
        raise ValueError(f"target_norm must be a finite number > 0, got {target_norm!r}")
    mean_norm = float(torch.linalg.vector_norm(features.double(), dim=1).mean())
    if not (math.isfinite(mean_norm) and mean_norm > 0):
        raise ValueError(f"the mean row norm of features is {mean_norm}; cannot scale it to {target_norm}")
    return target_norm / mean_norm


def train_linear_svms(features: Tensor, targets: Tensor, config: SVMConfig | None = None, *, init: LinearSVMs | None = None) -> LinearSVMs:
    """Train K one-vs-rest linear SVMs at once (the objective in the module
    docstring), on the device and in the dtype (float32/float64) of ``features``.

    features: Tensor[N, D] (already scaled, see ``feature_scale``).
    targets: Tensor[N, K] with values +1 (positive), -1 (negative) and 0 (the
        row is ignored for that class).
    init: optional starting point (a warm start, e.g. the previous model in
        hard negative mining); it changes the work done, not the solution.
    Returns LinearSVMs with weight Tensor[K, D] and bias Tensor[K]. Classes
    with no rows at all get the zero scorer. Deterministic.
    """
    config = SVMConfig() if config is None else config
    if not isinstance(features, Tensor) or features.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"features must be a float32 or float64 tensor, got {getattr(features, 'dtype', type(features))}")
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    if not isinstance(targets, Tensor) or targets.dim() != 2 or targets.shape[0] != features.shape[0]:
        raise ValueError(f"targets must be [N, K] with N = {features.shape[0]}, got {getattr(targets, 'shape', type(targets))}")
    targets = targets.to(device=features.device)
    if not bool(((targets == 1) | (targets == -1) | (targets == 0)).all()):
        raise ValueError("targets must hold only +1 (positive), -1 (negative) and 0 (ignored)")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features hold NaN or infinite values")
    num_rows, dim = features.shape
    num_classes = targets.shape[1]
    y = targets.to(features.dtype)
    cost = config.C * torch.where(y > 0, config.positive_weight, torch.where(y < 0, 1.0, 0.0)).to(features.dtype)
    if init is None:
        w = features.new_zeros(dim + 1, num_classes)
    else:
        if init.weight.shape != (num_classes, dim):
            raise ValueError(f"init must have weight [{num_classes}, {dim}], got {tuple(init.weight.shape)}")
        w = torch.cat([init.weight.T, init.bias[None] / config.bias_feature]).to(features)
    w, converged = _Solver(features, y, cost, config).run(w)
    if not bool(converged.all()):
        warnings.warn(
            f"linear SVM solve stopped after max_iter={config.max_iter} Newton steps with "
            f"{int((~converged).sum())} of {num_classes} classes above tol={config.tol}",
            RuntimeWarning,
            stacklevel=2,
        )
    return LinearSVMs(w[:-1].T.contiguous(), w[-1] * config.bias_feature)


class _Solver:
    """Batched semismooth Newton-CG for the problem of the module docstring.

    Vectors over the D + 1 augmented dimensions are columns of Tensor[D+1, K];
    per-row quantities are Tensor[N, K]. Every class has its own line search,
    CG recurrences and stopping test, so a batched solve equals K single ones.
    """

    def __init__(self, x: Tensor, y: Tensor, cost: Tensor, config: SVMConfig) -> None:
        self.x, self.y, self.cost, self.config = x, y, cost, config
        self.hinge = config.loss == "hinge"
        self.bias = config.bias_feature
        # float64 for the per-class sums that decide convergence
        self.acc = torch.float64 if x.device.type != "mps" else x.dtype
        # hinge: multipliers (dual variables) and penalty of the augmented Lagrangian
        cmax = cost.amax(0) if cost.shape[0] else cost.new_zeros(cost.shape[1])
        cmax = torch.where(cmax > 0, cmax, torch.ones_like(cmax))
        self.sigma = cmax.clone()
        self.sigma_max = cmax * _SIGMA_MAX_FACTOR
        self.lam = torch.zeros_like(cost)

    # -- products with the augmented matrix X~ = [X, B] ---------------------------
    def matvec(self, v: Tensor) -> Tensor:
        return torch.addmm(v[-1:] * self.bias, self.x, v[:-1])

    def rmatvec(self, r: Tensor) -> Tensor:
        # (r^T X)^T reads X row-major: several times faster than X^T @ r on CPU
        return torch.cat([(r.T @ self.x).T, self.bias * r.sum(0, keepdim=True)])

    def sq_rmatvec(self, h: Tensor) -> Tensor:
        """diag(X~^T diag(h_k) X~) for every class, in row blocks."""
        x = self.x
        step = max(1, _BLOCK_ELEMENTS // max(1, x.shape[1]))
        out = x.new_zeros(x.shape[1], h.shape[1])
        for start in range(0, x.shape[0], step):
            block = x[start : start + step]
            out += (h[start : start + step].T @ (block * block)).T
        return torch.cat([out, self.bias**2 * h.sum(0, keepdim=True)])

    # -- loss pieces ------------------------------------------------------------------
    def dual(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Dual estimate r(u) (the loss' derivative term, in [0, c]) and its
        slope h(u) (the generalised Hessian's row weights): Tensor[N, K] each."""
        if self.hinge:
            s = self.sigma * u + self.lam
            r = torch.minimum(s.clamp(min=0), self.cost)
            h = torch.where((s > 0) & (s < self.cost), self.sigma, 0.0)
        else:
            r = 2 * self.cost * u.clamp(min=0)
            h = torch.where(u > 0, 2 * self.cost, 0.0)
        return r, h

    def evaluate(self, w: Tensor, u: Tensor):
        r, h = self.dual(u)
        grad = w - self.rmatvec(self.y * r)
        pos = u.clamp(min=0)
        loss = pos if self.hinge else pos * pos
        primal = 0.5 * (w.to(self.acc) ** 2).sum(0) + (self.cost * loss).to(self.acc).sum(0)
        half_g2 = 0.5 * (grad.to(self.acc) ** 2).sum(0)
        # gap = sum_i (c_i loss(u_i) - r_i u_i [+ r_i^2 / 4c_i]) + 0.5 ||grad||^2 >= 0;
        # the first sum vanishes identically for the squared hinge (r = 2 c u+).
        comp = (self.cost * pos - r * u).to(self.acc).sum(0) if self.hinge else torch.zeros_like(half_g2)
        return r, h, grad, primal, comp, half_g2

    # -- the iteration ----------------------------------------------------------------------
    def run(self, w: Tensor) -> tuple[Tensor, Tensor]:
        config = self.config
        num_classes = w.shape[1]
        converged = torch.zeros(num_classes, dtype=torch.bool, device=w.device)
        u = 1 - self.y * self.matvec(w)
        if self.hinge:
            # start the multipliers at the hinge's subgradient of the start point
            self.lam = torch.where(u > 0, self.cost, 0.0)
        for step in range(config.max_iter + 1):
            r, h, grad, primal, comp, half_g2 = self.evaluate(w, u)
            converged = comp + half_g2 <= config.tol * primal
            if self.hinge:
                move = ~converged & (half_g2 <= _INNER_FRACTION * comp)
                if bool(move.any()):
                    self.lam = torch.where(move, r, self.lam)
                    self.sigma = torch.where(move, torch.minimum(self.sigma * _SIGMA_GROWTH, self.sigma_max), self.sigma)
                    r, h, grad, primal, comp, half_g2 = self.evaluate(w, u)
                    converged = comp + half_g2 <= config.tol * primal
            if bool(converged.all()) or step == config.max_iter:
                break
            active = ~converged
            direction = self.newton_direction(grad, h, active)
            z = self.y * self.matvec(direction)
            t = self.line_search(w, direction, u, z, r, active)
            w = w + t * direction
            u = 1 - self.y * self.matvec(w)
        return w, converged

    def newton_direction(self, grad: Tensor, h: Tensor, active: Tensor) -> Tensor:
        """Jacobi-preconditioned CG on (I + X~^T diag(h) X~) d = -grad, per class."""
        inv_diag = 1.0 / (1.0 + self.sq_rmatvec(h))
        gnorm = torch.linalg.vector_norm(grad, dim=0)
        target = _CG_FORCING * gnorm
        d = torch.zeros_like(grad)
        res = -grad
        z = res * inv_diag
        p = z
        rz = (res * z).sum(0)
        run = active & (gnorm > 0)
        for _ in range(min(_CG_MAX_ITER, grad.shape[0])):
            if not bool(run.any()):
                break
            hp = p + self.rmatvec(h * self.matvec(p))
            alpha = torch.where(run, rz / (p * hp).sum(0), 0.0)
            d = d + alpha * p
            res = res - alpha * hp
            run = run & (torch.linalg.vector_norm(res, dim=0) > target)
            z = res * inv_diag
            rz_new = (res * z).sum(0)
            beta = torch.where(run, rz_new / rz, 0.0)
            p = z + beta * p
            rz = rz_new
        return d

    def line_search(self, w: Tensor, d: Tensor, u: Tensor, z: Tensor, r: Tensor, active: Tensor) -> Tensor:
        """Step t in [0, 1] along d for each class: the objective is convex and
        C^1 on the ray with a piecewise linear derivative phi'(t); take t = 1
        when phi'(1) <= 0, else solve phi'(t) = 0 by safeguarded Newton."""
        wd = (w * d).sum(0)
        dd = (d * d).sum(0)
        slope0 = wd - (z * r).sum(0)  # phi'(0) < 0 for a descent direction

        def derivatives(t: Tensor) -> tuple[Tensor, Tensor]:
            rt, ht = self.dual(u - t * z)
            return wd + t * dd - (z * rt).sum(0), dd + (z * z * ht).sum(0)

        pending = active & (slope0 < 0)
        one = torch.ones_like(wd)
        t = torch.where(pending, one, 0.0)
        if not bool(pending.any()):
            return t
        dphi, ddphi = derivatives(t)
        pending = pending & (dphi > 0)
        lo, hi = torch.zeros_like(wd), one.clone()
        for _ in range(_LINE_SEARCH_ITER):
            if not bool(pending.any()):
                break
            lo = torch.where(pending & (dphi <= 0), t, lo)
            hi = torch.where(pending & (dphi > 0), t, hi)
            cand = t - dphi / ddphi
            cand = torch.where((cand > lo) & (cand < hi), cand, 0.5 * (lo + hi))
            t = torch.where(pending, cand, t)
            dphi, ddphi = derivatives(t)
            pending = pending & ~((dphi <= 0) & (dphi >= _LINE_SEARCH_SLOPE * slope0))
        # any class still pending takes its last point known to descend
        return torch.where(pending, torch.where(dphi <= 0, t, lo), t)
