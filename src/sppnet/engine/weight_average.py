"""An exponential moving average of a model's weights over training steps
(Polyak averaging; Polyak & Juditsky 1992, as in e.g. Szegedy et al.'s
Inception-v3 and TensorFlow's ``ExponentialMovingAverage``).

On a small training set the weights after the last step are one draw from a
noisy walk: the held-out error of a classify-tiny run moves by several
points from one epoch to the next. The average of the last few hundred
steps' weights sits nearer the middle of that walk.

The decay of update ``t`` (counted from 0) is ``min(decay, (1 + t) / (10 + t))``:
the first updates weigh the new weights heavily, so the average does not
stay near the starting weights for ``1 / (1 - decay)`` steps. Floating-point
entries of the state dict (weights and, for batch-norm trunks, running
statistics) are averaged; integer ones (batch counts) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """``averaged``: a copy of ``model`` that holds the average (kept in eval mode)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.averaged = copy.deepcopy(model).eval().requires_grad_(False)

    def _pairs(self, model: nn.Module):
        ours, theirs = self.averaged.state_dict(), model.state_dict()
        return [(ours[name], theirs[name]) for name in ours]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (after an optimizer step)."""
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        floats, ends = [], []
        for average, current in self._pairs(model):
            if average.is_floating_point():
                floats.append(average)
                ends.append(current.detach())
            else:
                average.copy_(current)
        torch._foreach_lerp_(floats, ends, 1 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.averaged.load_state_dict(state)
        self.updates = updates
