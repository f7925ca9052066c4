"""Learning-rate schedules shared by every trainer (classification, window
fine-tuning, Fast R-CNN): steps that divide the lr by 10, a linear warm-up,
and steps moved along when a run's length changes."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["step_lr", "warmed_up_lr", "scaled_steps"]


def step_lr(lr: float, steps: Sequence[int], now: int) -> float:
    """``lr`` divided by 10 once for every step in ``steps`` that ``now``
    (an epoch or an iteration, 0-based) has reached."""
    return lr * 0.1 ** sum(now >= step for step in steps)


def warmed_up_lr(lr: float, step: int, warmup: int) -> float:
    """The lr of SGD step ``step`` (0-based): rising linearly to ``lr`` over the first ``warmup`` steps."""
    return lr * (step + 1) / warmup if step < warmup else lr


def scaled_steps(steps: Sequence[int], length: int, new_length: int) -> tuple[int, ...]:
    """lr steps of a run of ``length`` epochs or iterations moved to the same
    fraction of a run of ``new_length``."""
    return tuple(round(step * new_length / length) for step in steps)
