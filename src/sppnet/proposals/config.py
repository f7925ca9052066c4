"""Settings of a proposal method; ``key()`` names its cache folder."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sppnet.hashing import file_sha256

__all__ = ["METHODS", "ProposalConfig", "ProposalSettings", "FORMAT_VERSION"]

METHODS = ("selective-search-fast", "selective-search-quality", "edge-boxes", "grid")

# Bumped whenever the algorithm or the file layout changes the stored boxes; it
# is part of every config key, so old cache folders are simply not used.
FORMAT_VERSION = 2  # 2: selective search groups in sppnet (ties in similarity broken by region index)


@dataclass(frozen=True)
class ProposalConfig:
    """Settings of one proposal method (every field is validated).

    Only the fields that change the boxes of the chosen method enter
    :meth:`key` (e.g. the grid settings do not matter for selective search).
    """

    # Which proposal algorithm: one of METHODS.
    method: str = "selective-search-fast"
    # Keep at most this many boxes per image (the first ones in the method's
    # ranking; for the grid an evenly spread subset).
    max_proposals: int = 2000
    # Drop boxes whose width or height is below this many pixels of the ORIGINAL
    # image (0 keeps every box of positive size).
    min_size: int = 16
    # Resize the image so that its shorter side is this many pixels before
    # searching (up or down); boxes are mapped back to the original pixels.
    # None searches at the native size. The grid ignores it (its windows are
    # fractions of the image's size).
    resize_to: int | None = 500
    # The structured-edge model file for edge boxes (e.g. OpenCV's
    # model.yml.gz), which the USER must supply; required for "edge-boxes".
    edge_model: Path | None = None
    # EdgeBoxes step size of the sliding-window search (OpenCV's alpha).
    edge_alpha: float = 0.65
    # EdgeBoxes NMS threshold between proposals (OpenCV's beta).
    edge_beta: float = 0.75
    # Grid: side of the square window of each scale, as a fraction of the
    # image's shorter side (a window of aspect ratio r keeps the same area).
    grid_scales: tuple[float, ...] = (0.1, 0.2, 0.32, 0.5, 0.75)
    # Grid: aspect ratios height / width of the windows.
    grid_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # Grid: step between neighbouring windows as a fraction of the window's own
    # width (horizontally) and height (vertically); windows are spread evenly
    # from one border to the other with at most this step. With the defaults a
    # 500 x 375 image gets 2,078 windows (then max_proposals applies).
    grid_stride: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown proposal method {self.method!r}; choose one of: {', '.join(METHODS)}")
        _check_int("max_proposals", self.max_proposals, minimum=1)
        _check_int("min_size", self.min_size, minimum=0)
        if self.resize_to is not None:
            _check_int("resize_to", self.resize_to, minimum=1)
        for name in ("edge_alpha", "edge_beta", "grid_stride"):
            value = getattr(self, name)
            if not _is_positive_number(value):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("grid_scales", "grid_aspect_ratios"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
                raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
            for value in values:
                if not _is_positive_number(value):
                    raise ValueError(f"{name} must hold positive numbers, got {value!r} in {values!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if self.edge_model is not None:
            object.__setattr__(self, "edge_model", Path(self.edge_model))
        if self.method == "edge-boxes":
            if self.edge_model is None:
                raise ValueError(
                    "edge-boxes needs the structured edge detection model file (OpenCV's model.yml.gz), "
                    "which sppnet does not ship: the user must supply the structured edge model file "
                    "and pass its path as edge_model"
                )
            if not self.edge_model.is_file():
                raise FileNotFoundError(
                    f"structured edge model file not found: {self.edge_model} (edge-boxes needs the model file, "
                    "e.g. OpenCV's model.yml.gz, which the user must supply)"
                )

    def key(self) -> str:
        """A short stable hash (12 hex digits) of the settings that change the boxes."""
        return hashlib.sha256(json.dumps(self._key_fields(), sort_keys=True).encode()).hexdigest()[:12]

    def _key_fields(self) -> dict:
        out: dict = {
            "version": FORMAT_VERSION,
            "method": self.method,
            "max_proposals": self.max_proposals,
            "min_size": self.min_size,
        }
        if self.method == "grid":
            out.update(
                grid_scales=list(self.grid_scales),
                grid_aspect_ratios=list(self.grid_aspect_ratios),
                grid_stride=float(self.grid_stride),
            )
        else:
            out["resize_to"] = self.resize_to
        if self.method == "edge-boxes":
            assert self.edge_model is not None  # checked in __post_init__
            out.update(
                edge_model_sha256=file_sha256(self.edge_model),
                edge_alpha=float(self.edge_alpha),
                edge_beta=float(self.edge_beta),
            )
        return out


def _is_positive_number(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
        and value > 0
    )


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ProposalSettings:
    """The proposal fields of every detector's config (SPP-net, R-CNN, Fast
    R-CNN inherit them, so their YAML keys stay top-level): the method, how
    many boxes, and the size images are searched at."""

    proposals: str = "selective-search-fast"  # or selective-search-quality | edge-boxes | grid
    max_proposals: int = 2000
    proposal_resize: int | None = 500  # shorter side images are searched at; None = native size
    proposal_min_size: int = 16  # drop boxes narrower or lower than this, in the image's own pixels

    @property
    def proposal_config(self) -> ProposalConfig:
        return ProposalConfig(
            method=self.proposals,
            max_proposals=self.max_proposals,
            resize_to=self.proposal_resize,
            min_size=self.proposal_min_size,
        )
