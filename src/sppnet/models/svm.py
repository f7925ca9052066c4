"""Linear SVMs on region features and one-pass hard negative mining (SPEC 4.3, 8).

Shapes and names: N feature rows, D feature dimensions, K classes (one binary
one-vs-rest SVM each), M rows of one image, P_k positives of class k.
``targets[i, k]`` is +1 (positive), -1 (negative) or 0 (row ``i`` plays no part
in class ``k``), so K classes with different training sets share one feature
matrix and are trained in one call.

The problem (liblinear's, as R-CNN and SPP-net train it): for each class, with
the bias feature ``B`` appended to every row, x~ = [x, B] and w~ = [w, v],

    min_w~  0.5 * ||w~||^2 + sum_i c_i * loss(1 - y_i * w~ . x~_i)

with ``c_i = C * positive_weight`` for positives and ``C`` for negatives, and
``loss(u) = max(0, u)`` (hinge: SPEC 4.3, liblinear ``-s 3``, R-CNN's choice)
or ``max(0, u)^2`` (squared hinge, liblinear ``-s 1``). The bias weight ``v``
is regularised like the others; the decision bias is ``b = v * B``.

Solver: dual coordinate descent with shrinking (Hsieh et al. 2008), the
algorithm of liblinear's ``-s 3`` / ``-s 1`` that R-CNN ran, as a numba kernel
with one thread task per class. Why this and not a batched Newton method in
torch: the hinge loss is not smooth, and a primal Newton method (through a
smoothing or an augmented Lagrangian) has a Hessian whose conditioning grows
without bound as it nears the hinge solution; on fc7-like data it was orders of
magnitude slower than this method, which touches one row at a time with a
closed-form update, needs no step size, and discards rows that settle at a bound
(most negatives). It stops like liblinear: when the projected gradients of the
dual (in margin units) span at most ``tol``. Each class runs on its own rows in
a fixed pseudo-random order, so training K classes together gives bit for bit
the weights of K separate trainings, run after run. Features on another device
are solved on the CPU and the model comes back on their device and dtype.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import torch
from torch import Tensor, nn

from sppnet.ops.threads import torch_thread_count_kept

__all__ = ["SVMConfig", "LinearSVMs", "train_linear_svms", "svm_objective", "feature_scale", "HardNegativeMiner"]

_LOSSES = ("hinge", "squared_hinge")
# Seed of the per-class row order of the coordinate descent (liblinear uses rand()).
_SEED = 0x9E3779B97F4A7C15


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
    # Most passes of the coordinate descent over a class's rows (liblinear: 1000).
    max_iter: int = 1000
    # Stop when the dual's projected gradients span at most tol margin units
    # (liblinear's -e). 0.1 is liblinear's default for this solver and what
    # R-CNN ran; at 1e-3 the solver hit max_iter on small, nearly separable
    # sets. SPP-net on the demo's set: 26.7 mAP at 0.1, 24.7 at 1e-3 (RESULTS.md).
    tol: float = 0.1
    # Whether the detector trains its SVMs at all. A preset that scores with the
    # fine-tuned softmax (test.scorer: softmax) may skip them: then the run has
    # no svm.safetensors and cannot be scored with --scorer svm.
    train: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.train, bool):
            raise ValueError(f"SVMConfig.train must be true or false, got {self.train!r}")
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


def train_linear_svms(features: Tensor, targets: Tensor, config: SVMConfig | None = None) -> LinearSVMs:
    """Train K one-vs-rest linear SVMs (the problem of the module docstring).

    features: Tensor[N, D], float32 or float64, already scaled (``feature_scale``).
    targets: Tensor[N, K] with +1 (positive), -1 (negative), 0 (row ignored by
        that class); any integer or float dtype.
    Returns LinearSVMs (weight Tensor[K, D], bias Tensor[K]) on the device and
    in the dtype of ``features``. A class with no rows gets the zero scorer.
    Warns (RuntimeWarning) when a class stops at ``max_iter`` before ``tol``.
    """
    config = SVMConfig() if config is None else config
    x = _check_features(features, "features")
    if not isinstance(targets, Tensor) or targets.dim() != 2 or targets.shape[0] != x.shape[0]:
        raise ValueError(f"targets must be [N, K] with N = {x.shape[0]}, got {getattr(targets, 'shape', type(targets))}")
    targets = targets.detach().to("cpu")
    if not bool(((targets == 1) | (targets == -1) | (targets == 0)).all()):
        raise ValueError("targets must hold only +1 (positive), -1 (negative) and 0 (ignored)")
    by_class = targets.T != 0  # [K, N]
    pairs = by_class.nonzero()  # (class, row), sorted by class then row
    offsets = torch.zeros(targets.shape[1] + 1, dtype=torch.int64)
    offsets[1:] = by_class.sum(1).cumsum(0)
    labels = targets.T[by_class].to(torch.float64)
    w = _fit(x.cpu().contiguous(), offsets, pairs[:, 1].contiguous(), labels, config)
    return _to_model(w, config.bias_feature, features)


def svm_objective(model: LinearSVMs, features: Tensor, targets: Tensor, config: SVMConfig | None = None) -> Tensor:
    """The primal objective of each class at ``model`` (float64 Tensor[K]):
    0.5 * (||w_k||^2 + (b_k / B)^2) + sum_i c_ik * loss(1 - y_ik * score_ik),
    over the rows with a non-zero target. features: Tensor[N, D]; targets:
    Tensor[N, K] as in ``train_linear_svms``."""
    config = SVMConfig() if config is None else config
    scores = model.decision_function(features).double()
    y = targets.to(scores)
    cost = config.C * torch.where(y > 0, config.positive_weight, torch.where(y < 0, 1.0, 0.0))
    margin = (1 - y * scores).clamp(min=0)
    loss = margin if config.loss == "hinge" else margin * margin
    weight = model.weight.double()
    bias = model.bias.double() / config.bias_feature
    return 0.5 * ((weight * weight).sum(1) + bias * bias) + (cost * loss).sum(0)


def _check_features(features: Tensor, name: str) -> Tensor:
    if not isinstance(features, Tensor) or features.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be a float32 or float64 tensor, got {getattr(features, 'dtype', type(features))}")
    if features.dim() != 2:
        raise ValueError(f"{name} must be [N, D], got shape {tuple(features.shape)}")
    features = features.detach()
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} hold NaN or infinite values")
    return features


def _to_model(w: np.ndarray, bias_feature: float, like: Tensor) -> LinearSVMs:
    """[K, D+1] float64 augmented weights -> LinearSVMs on like's device/dtype."""
    w_t = torch.from_numpy(w).to(device=like.device, dtype=like.dtype)
    return LinearSVMs(w_t[:, :-1].contiguous(), (w_t[:, -1] * bias_feature).contiguous())


def _fit(x: Tensor, offsets: Tensor, rows: Tensor, labels: Tensor, config: SVMConfig) -> np.ndarray:
    """Run the coordinate descent for K classes over one CPU feature matrix.

    x: Tensor[N, D] (CPU, contiguous); class k trains on rows
    ``rows[offsets[k]:offsets[k+1]]`` of x with labels (+1/-1, float64) at the
    same positions. Returns the augmented weights, np.ndarray[K, D+1] float64.
    """
    num_classes = offsets.shape[0] - 1
    cost = config.C * torch.where(labels > 0, config.positive_weight, 1.0).to(torch.float64)
    if config.loss == "hinge":
        upper, diag = cost, torch.zeros_like(cost)
    else:
        upper, diag = torch.full_like(cost, math.inf), 0.5 / cost
    w = np.zeros((num_classes, x.shape[1] + 1), dtype=np.float64)
    iterations = np.zeros(num_classes, dtype=np.int64)
    converged = np.zeros(num_classes, dtype=np.bool_)
    scratch = rows.shape[0]
    chunksize = numba.get_parallel_chunksize()
    numba.set_parallel_chunksize(1)  # classes differ in size: hand them out one at a time
    try:
        with torch_thread_count_kept():
            _dual_cd_classes(
                x.numpy(), float(config.bias_feature), offsets.numpy(), rows.numpy(), labels.numpy(),
                upper.numpy(), diag.numpy(), float(config.tol), int(config.max_iter), np.uint64(_SEED),
                w, np.zeros(scratch, dtype=np.float64), np.zeros(scratch, dtype=np.float64),
                np.zeros(scratch, dtype=np.int64), iterations, converged,
            )
    finally:
        numba.set_parallel_chunksize(chunksize)
    if not converged.all():
        warnings.warn(
            f"linear SVM: {int((~converged).sum())} of {num_classes} classes stopped at "
            f"max_iter={config.max_iter} passes before reaching tol={config.tol}",
            RuntimeWarning,
            stacklevel=3,
        )
    return w


@numba.njit(inline="always")
def _xorshift(state):
    state ^= state << np.uint64(13)
    state ^= state >> np.uint64(7)
    state ^= state << np.uint64(17)
    return state


# Reassociation lets the dot products and updates vectorise; no flag that
# assumes finite values (the kernel compares with +-inf bounds).
@numba.njit(cache=True, fastmath={"reassoc", "contract", "nsz"})
def _dual_cd(x, bias, rows, labels, upper, diag, tol, max_iter, seed, w, alpha, qd, index):
    """liblinear's solve_l2r_l1l2_svc for one class (dual coordinate descent
    with shrinking). w: (D+1,) float64, zeroed here; alpha, qd, index: scratch
    of len(rows). Returns (passes, converged)."""
    n = rows.shape[0]
    dim = x.shape[1]
    for j in range(dim + 1):
        w[j] = 0.0
    for t in range(n):
        i = rows[t]
        norm = bias * bias
        for j in range(dim):
            norm += x[i, j] * x[i, j]
        qd[t] = norm + diag[t]
        alpha[t] = 0.0
        index[t] = t
    active = n
    pg_max_old = np.inf
    pg_min_old = -np.inf
    state = seed
    passes = 0
    converged = False
    while passes < max_iter:
        pg_max_new = -np.inf
        pg_min_new = np.inf
        for s in range(active):
            state = _xorshift(state)
            j = s + np.int64(state % np.uint64(active - s))
            index[s], index[j] = index[j], index[s]
        s = 0
        while s < active:
            t = index[s]
            i = rows[t]
            y = labels[t]
            dot = w[dim] * bias
            for j in range(dim):
                dot += w[j] * x[i, j]
            g = y * dot - 1.0 + alpha[t] * diag[t]
            c = upper[t]
            pg = 0.0
            if alpha[t] == 0.0:
                if g > pg_max_old:  # shrink: stays at the lower bound
                    active -= 1
                    index[s], index[active] = index[active], index[s]
                    continue
                if g < 0.0:
                    pg = g
            elif alpha[t] == c:
                if g < pg_min_old:  # shrink: stays at the upper bound
                    active -= 1
                    index[s], index[active] = index[active], index[s]
                    continue
                if g > 0.0:
                    pg = g
            else:
                pg = g
            pg_max_new = max(pg_max_new, pg)
            pg_min_new = min(pg_min_new, pg)
            if abs(pg) > 1e-12:
                old = alpha[t]
                new = min(max(old - g / qd[t], 0.0), c)
                alpha[t] = new
                step = (new - old) * y
                for j in range(dim):
                    w[j] += step * x[i, j]
                w[dim] += step * bias
            s += 1
        passes += 1
        if pg_max_new - pg_min_new <= tol:
            if active == n:
                converged = True
                break
            active = n  # converged on the shrunk set: check every row again
            pg_max_old = np.inf
            pg_min_old = -np.inf
            continue
        pg_max_old = pg_max_new if pg_max_new > 0.0 else np.inf
        pg_min_old = pg_min_new if pg_min_new < 0.0 else -np.inf
    return passes, converged


@numba.njit(cache=True, parallel=True)
def _dual_cd_classes(x, bias, offsets, rows, labels, upper, diag, tol, max_iter, seed, w, alpha, qd, index, iterations, converged):
    """One _dual_cd per class, classes in parallel; scratch arrays are split
    by the class offsets."""
    for k in numba.prange(w.shape[0]):
        a, b = offsets[k], offsets[k + 1]
        passes, ok = _dual_cd(x, bias, rows[a:b], labels[a:b], upper[a:b], diag[a:b], tol, max_iter, seed, w[k], alpha[a:b], qd[a:b], index[a:b])
        iterations[k] = passes
        converged[k] = ok


class HardNegativeMiner:
    """One-pass hard negative mining for K class SVMs (SPEC 4.3, R-CNN's
    ``rcnn_train``), fed one image at a time.

    Each class keeps its positives (given up front, never evicted) and a cache
    of negatives. The first image adds all of its negatives and trains every
    class that has some. Each later image adds, per class, only the negatives
    that score above ``hard_threshold`` under the current model and are not
    cached yet (keys: image id, row index). A class whose count of negatives
    added since its last training exceeds ``retrain_after`` is retrained, and
    its cached negatives scoring below ``evict_threshold`` under the new model
    are dropped. ``finish`` retrains every class with new negatives since its
    last training and returns the model (a class whose cache only shrank since
    then would get the same model back: evicted negatives score below -1 and
    carry no loss). A class that never receives a negative keeps the zero
    scorer, as in R-CNN.

    Features must already be scaled (``feature_scale``); they are cached on the
    CPU, once per row however many classes cache it, in the dtype of
    ``positives[0]``.

    positives: K tensors Tensor[P_k, D] (P_k may be 0).
    Counters: ``retrains`` (Tensor[K]), ``num_cached_negatives`` (Tensor[K]),
    ``num_added`` (Tensor[K], since each class's last training), ``images_seen``.
    """

    def __init__(
        self,
        config: SVMConfig | None,
        feature_dim: int,
        num_classes: int,
        positives: Sequence[Tensor],
        *,
        retrain_after: int = 2000,
        hard_threshold: float = -1.0001,
        evict_threshold: float = -1.2,
    ) -> None:
        self.config = SVMConfig() if config is None else config
        if feature_dim < 1 or num_classes < 1:
            raise ValueError(f"feature_dim and num_classes must be >= 1, got {feature_dim} and {num_classes}")
        if len(positives) != num_classes:
            raise ValueError(f"positives must hold one tensor per class ({num_classes}), got {len(positives)}")
        if not isinstance(retrain_after, int) or retrain_after < 0:
            raise ValueError(f"retrain_after must be an int >= 0, got {retrain_after!r}")
        if math.isnan(hard_threshold) or math.isnan(evict_threshold):
            raise ValueError(f"thresholds must be numbers, got {hard_threshold} and {evict_threshold}")
        self.feature_dim, self.num_classes = feature_dim, num_classes
        self.retrain_after, self.hard_threshold, self.evict_threshold = retrain_after, hard_threshold, evict_threshold
        checked = [_check_features(p, f"positives[{k}]") for k, p in enumerate(positives)]
        for k, p in enumerate(checked):
            if p.shape[1] != feature_dim:
                raise ValueError(f"positives[{k}] must be [P, {feature_dim}], got shape {tuple(p.shape)}")
        self.dtype = checked[0].dtype
        # the row store: features, keys (image id, row; -1 for positives),
        # positive and cached-negative membership per class; rows [0, size)
        # are live, the buffers grow by doubling.
        sizes = [p.shape[0] for p in checked]
        total = sum(sizes)
        self._x = torch.cat([p.to("cpu", self.dtype) for p in checked]) if total else torch.zeros(0, feature_dim, dtype=self.dtype)
        self._keys = torch.full((total, 2), -1, dtype=torch.int64)
        self._pos = torch.zeros(total, num_classes, dtype=torch.bool)
        self._pos[torch.arange(total), torch.repeat_interleave(torch.arange(num_classes), torch.tensor(sizes, dtype=torch.int64))] = True
        self._neg = torch.zeros(total, num_classes, dtype=torch.bool)
        self._size = total
        self._model = LinearSVMs.zeros(num_classes, feature_dim, dtype=self.dtype)
        self._trained = torch.zeros(num_classes, dtype=torch.bool)
        self.retrains = torch.zeros(num_classes, dtype=torch.int64)
        self.num_added = torch.zeros(num_classes, dtype=torch.int64)
        self.images_seen = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, feature_dim={self.feature_dim}, "
            f"images_seen={self.images_seen}, cached_negatives={self.num_cached_negatives.tolist()}, "
            f"retrains={self.retrains.tolist()})"
        )

    # -- read-only views ---------------------------------------------------------------
    @property
    def model(self) -> LinearSVMs:
        """The current model (a copy): the one that picks hard negatives."""
        return LinearSVMs(self._model.weight.clone(), self._model.bias.clone())

    @property
    def num_cached_negatives(self) -> Tensor:
        """Tensor[K] int64: negatives in each class's cache."""
        return self._neg[: self._size].sum(0)

    @property
    def num_positives(self) -> Tensor:
        """Tensor[K] int64: positives of each class."""
        return self._pos[: self._size].sum(0)

    def cached_negatives(self, k: int) -> tuple[Tensor, Tensor]:
        """Class k's cached negatives: (features Tensor[n, D], keys Tensor[n, 2]
        of (image id, row index in that image))."""
        rows = self._neg[: self._size, k].nonzero()[:, 0]
        return self._x[rows].clone(), self._keys[rows].clone()

    def positives(self, k: int) -> Tensor:
        """Class k's positives, Tensor[P_k, D]."""
        return self._x[self._pos[: self._size, k].nonzero()[:, 0]].clone()

    # -- mining ----------------------------------------------------------------------------
    def add_image(self, features: Tensor, negative_mask: Tensor, image_id: int | None = None) -> Tensor:
        """Offer the rows of one image.

        features: Tensor[M, D], scaled like the positives.
        negative_mask: Tensor[M, K] bool, True where the row may be a negative
            of the class (SPEC 4.3: IoU < 0.3 with every ground truth of it).
        image_id: the image's id for the duplicate check (default: the number
            of images seen so far); pass ids when the same image may come back.
        Returns Tensor[K] int64: the negatives added to each class's cache.
        Retrains (and evicts for) the classes that reach their trigger.
        """
        x = _check_features(features, "features")
        if x.shape[1] != self.feature_dim:
            raise ValueError(f"features must be [M, {self.feature_dim}], got shape {tuple(x.shape)}")
        if not isinstance(negative_mask, Tensor) or negative_mask.dtype != torch.bool or negative_mask.shape != (x.shape[0], self.num_classes):
            raise ValueError(
                f"negative_mask must be a bool tensor of shape ({x.shape[0]}, {self.num_classes}), "
                f"got {getattr(negative_mask, 'dtype', type(negative_mask))} {tuple(getattr(negative_mask, 'shape', ()))}"
            )
        image = self.images_seen if image_id is None else image_id
        if not isinstance(image, int) or image < 0:
            raise ValueError(f"image_id must be an int >= 0, got {image_id!r}")
        x = x.to("cpu", self.dtype)
        candidates = negative_mask.to("cpu").clone()
        first = self.images_seen == 0
        if not first:
            candidates &= self._model.decision_function(x) > self.hard_threshold
        # rows of this image already in the store: set membership, do not copy
        live = self._keys[: self._size]
        stored = (live[:, 0] == image).nonzero()[:, 0]
        row_of_stored = live[stored, 1]
        if stored.numel() and int(row_of_stored.max()) >= x.shape[0]:
            raise ValueError(f"image_id {image} came before with more than {x.shape[0]} rows")
        if stored.numel():
            candidates[row_of_stored] &= ~self._neg[stored]
            self._neg[stored] |= candidates[row_of_stored]
            is_new = torch.ones(x.shape[0], dtype=torch.bool)
            is_new[row_of_stored] = False
        else:
            is_new = torch.ones(x.shape[0], dtype=torch.bool)
        new_rows = (is_new & candidates.any(1)).nonzero()[:, 0]
        self._append(x[new_rows], torch.stack([torch.full_like(new_rows, image), new_rows], 1), candidates[new_rows])
        added = candidates.sum(0)
        self.num_added += added
        self.images_seen += 1
        has_negatives = self.num_cached_negatives > 0
        due = has_negatives if first else self.num_added > self.retrain_after
        if bool(due.any()):
            self._retrain(due.nonzero()[:, 0])
        return added

    def finish(self) -> LinearSVMs:
        """Retrain every class with negatives added since its last training
        (or never trained) and return the final model."""
        due = (self.num_cached_negatives > 0) & ((self.num_added > 0) | ~self._trained)
        if bool(due.any()):
            self._retrain(due.nonzero()[:, 0])
        return self.model

    # -- internals -------------------------------------------------------------------------
    def _append(self, x: Tensor, keys: Tensor, negatives: Tensor) -> None:
        count = x.shape[0]
        if count == 0:
            return
        needed = self._size + count
        if needed > self._x.shape[0]:
            capacity = max(needed, 2 * self._x.shape[0], 1024)
            self._x = _grown(self._x, capacity, self._size)
            self._keys = _grown(self._keys, capacity, self._size)
            self._pos = _grown(self._pos, capacity, self._size)
            self._neg = _grown(self._neg, capacity, self._size)
        end = self._size + count
        self._x[self._size : end] = x
        self._keys[self._size : end] = keys
        self._pos[self._size : end] = False
        self._neg[self._size : end] = negatives
        self._size = end

    def _retrain(self, classes: Tensor) -> None:
        """Train ``classes`` (Tensor[S] of class indices) together on their
        positives and cached negatives, then evict their easy negatives."""
        size = self._size
        pos, neg = self._pos[:size, classes], self._neg[:size, classes]
        # per class: its positive rows, then its negative rows
        rows, labels, counts = [], [], []
        for j in range(classes.shape[0]):
            p, n = pos[:, j].nonzero()[:, 0], neg[:, j].nonzero()[:, 0]
            rows += [p, n]
            labels += [torch.ones(p.shape[0], dtype=torch.float64), -torch.ones(n.shape[0], dtype=torch.float64)]
            counts.append(p.shape[0] + n.shape[0])
        offsets = torch.zeros(classes.shape[0] + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(counts, dtype=torch.int64).cumsum(0)
        w = _fit(self._x[:size], offsets, torch.cat(rows), torch.cat(labels), self.config)
        trained = _to_model(w, self.config.bias_feature, self._x)
        self._model.weight[classes] = trained.weight
        self._model.bias[classes] = trained.bias
        self._trained[classes] = True
        self.retrains[classes] += 1
        self.num_added[classes] = 0
        # evict: cached negatives of these classes that are now easy
        cached = neg.any(1).nonzero()[:, 0]
        scores = trained.decision_function(self._x[cached])
        self._neg[cached[:, None], classes[None, :]] &= scores >= self.evict_threshold
        self._compact()

    def _compact(self) -> None:
        """Drop rows no class uses any more, once they are half the store."""
        keep = (self._pos[: self._size] | self._neg[: self._size]).any(1)
        if int(keep.sum()) * 2 > self._size:
            return
        rows = keep.nonzero()[:, 0]
        count = rows.shape[0]
        self._x[:count] = self._x[rows]
        self._keys[:count] = self._keys[rows]
        self._pos[:count] = self._pos[rows]
        self._neg[:count] = self._neg[rows]
        self._size = count


def _grown(buffer: Tensor, capacity: int, size: int) -> Tensor:
    out = buffer.new_empty((capacity, *buffer.shape[1:]))
    out[:size] = buffer[:size]
    return out
