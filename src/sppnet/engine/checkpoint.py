"""Checkpoints: one safetensors file per save, written atomically.

A checkpoint holds model tensors under ``model.`` (and a weight average's,
if the loop keeps one, under ``averaged.``), optimizer state (tensors
under ``optimizer.state.<param>.<name>``, everything else as JSON in the
file's metadata), the global torch RNG state, the state of a training loop's
own ``torch.Generator`` and a JSON ``extra`` dict (epoch, config, ...). Nothing is pickled, so loading an untrusted file cannot
run code. Writes go to a temporary file in the same folder that replaces the
old checkpoint only when complete: a crash mid-save leaves the previous one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from sppnet.atomic import atomic_replace

__all__ = [
    "Checkpoint", "TrainingDiverged", "save_checkpoint", "load_checkpoint", "save_weights", "load_weights",
]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict | None = None
    rng_state: torch.Tensor | None = None  # torch.get_rng_state()
    extra: dict = field(default_factory=dict)
    generator_state: torch.Tensor | None = None  # a loop's own torch.Generator().get_state()
    averaged: dict[str, torch.Tensor] | None = None  # engine.weight_average's weights


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for param, values in state["state"].items():
        rest["state"][str(param)] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{param}.{name}"] = value.detach().contiguous().clone()
            else:
                rest["state"][str(param)][name] = value
    return tensors, rest


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state = {int(param): dict(values) for param, values in rest["state"].items()}
    for key, value in tensors.items():
        _, _, param, name = key.split(".", 3)
        state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in checkpoint.model.items()}
    if checkpoint.averaged is not None:
        tensors.update({f"averaged.{k}": v.detach().contiguous().clone() for k, v in checkpoint.averaged.items()})
    metadata = {"extra": json.dumps(checkpoint.extra)}
    if checkpoint.optimizer is not None:
        optimizer_tensors, optimizer_rest = _split_optimizer(checkpoint.optimizer)
        tensors.update(optimizer_tensors)
        metadata["optimizer"] = json.dumps(optimizer_rest)
    if checkpoint.rng_state is not None:
        tensors["rng.torch"] = checkpoint.rng_state.clone()
    if checkpoint.generator_state is not None:
        tensors["rng.generator"] = checkpoint.generator_state.clone()
    atomic_replace(Path(path), lambda temp: save_file(tensors, temp, metadata=metadata))


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        extra = json.loads(metadata.get("extra", "{}"))
        optimizer_rest = json.loads(metadata["optimizer"]) if "optimizer" in metadata else None
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not a readable sppnet checkpoint ({error})") from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    averaged = {k[len("averaged."):]: v for k, v in tensors.items() if k.startswith("averaged.")} or None
    optimizer = None
    if optimizer_rest is not None:
        optimizer = _join_optimizer({k: v for k, v in tensors.items() if k.startswith("optimizer.")}, optimizer_rest)
    return Checkpoint(model=model, optimizer=optimizer, rng_state=tensors.get("rng.torch"),
                      generator_state=tensors.get("rng.generator"), extra=extra, averaged=averaged)


def save_weights(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Weights only (a model's state_dict), atomically."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    atomic_replace(Path(path), lambda temp: save_file(tensors, temp, metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
