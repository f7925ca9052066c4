"""The run folder of a detector: refused when it holds another run, its
``config.yaml`` checked on ``--resume`` and written by rank 0; its trunk
pinned by ``backbone.txt`` (the classifier run's path and the SHA-256 of its
weights), so that a changed classifier run cannot silently change the detector."""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from sppnet.atomic import atomic_write_text, remove_stale_temp_files
from sppnet.config import from_dict, to_dict
from sppnet.hashing import file_sha256
from sppnet.engine import distributed
from sppnet.fast_path import cpu_flags

__all__ = ["open_run_folder", "read_classes", "record_backbone", "recorded_backbone", "record_environment"]


def _cpu() -> dict:
    """The CPU's model name and the vector extensions that pick torch's kernels
    (another CPU runs other kernels: other sums, other trained models)."""
    model, flags = cpu_flags()
    if model is None and not flags:
        return {}
    return {"cpu": model, "cpu_extensions": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})}


def record_environment(run_dir: Path, resumed: bool) -> None:
    """Append to ``run_dir/environment.jsonl`` one line for this start (or
    resume): the time, torch's version, its intra-op thread count, the
    device and the CPU. Another thread count or CPU sums in another order, so
    two runs of one config can differ; this line says which ran how. Rank 0 writes."""
    if not distributed.is_main():
        return
    entry = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "event": "resume" if resumed else "start",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "world_size": distributed.world(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        **_cpu(),
    }
    path = Path(run_dir) / "environment.jsonl"
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write_text(path, previous + json.dumps(entry) + "\n")


def open_run_folder(run_dir: Path, config, resume: bool, classes: Sequence[str]) -> None:
    """Check ``run_dir`` for a new run (empty or absent) or for ``resume``
    (its saved config must equal ``config``; temporary files that a killed
    process left are removed), then write ``config.yaml`` and
    ``classes.txt``. Every rank of a process group calls this; rank 0 writes."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise ValueError(f"run folder {run_dir} is not empty: pass --resume to continue it or choose another --out")
    saved = run_dir / "config.yaml"
    if saved.is_file() and from_dict(type(config), yaml.safe_load(saved.read_text(encoding="utf-8"))) != config:
        raise ValueError(f"{saved} differs from the given config; resume with the run's own config")
    distributed.barrier()  # every rank has checked the folder before rank 0 writes into it
    if distributed.is_main():
        if resume and run_dir.is_dir():
            remove_stale_temp_files(run_dir)  # left by a process killed while writing
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, yaml.safe_dump(to_dict(config), sort_keys=False))
        atomic_write_text(run_dir / "classes.txt", "".join(f"{c}\n" for c in classes))
    record_environment(run_dir, resumed=resume)


def read_classes(run_dir: str | Path) -> tuple[str, ...]:
    """A run's class names, in label order, from its ``classes.txt`` (one per
    line, as ``open_run_folder`` and classifier training write it)."""
    text = (Path(run_dir) / "classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def record_backbone(run_dir: Path, classifier_run: Path) -> None:
    """Pin the trunk in ``run_dir/backbone.txt``: ``classifier_run``'s path and
    the SHA-256 of its ``model.safetensors``. A resumed run must find the same
    trunk it started with. Every rank calls this; rank 0 writes."""
    classifier_run = Path(classifier_run).resolve()
    weights = classifier_run / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"the trunk's classifier run {classifier_run} has no model.safetensors: "
                                "only a finished classifier run can be a detector's trunk")
    path = Path(run_dir) / "backbone.txt"
    if path.is_file() and len(path.read_text(encoding="utf-8").splitlines()) > 1:
        recorded = recorded_backbone(run_dir)  # the same weights, or a clear error
        if recorded.resolve() != classifier_run:
            raise ValueError(f"{run_dir} was started on the trunk in {recorded}, not {classifier_run}")
        return
    if distributed.is_main():
        atomic_write_text(path, f"{classifier_run}\nsha256 {file_sha256(weights)}\n")


def recorded_backbone(run_dir: Path) -> Path:
    """The classifier run ``run_dir`` was trained on, after checking that its
    weights are still the ones recorded (runs written before the hash was
    recorded give only the path)."""
    lines = (Path(run_dir) / "backbone.txt").read_text(encoding="utf-8").splitlines()
    classifier_run = Path(lines[0].strip())
    if len(lines) > 1:
        expected = lines[1].removeprefix("sha256 ").strip()
        weights = classifier_run / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{run_dir} was trained on the trunk in {classifier_run}, "
                                    f"but {weights} is missing")
        actual = file_sha256(weights)
        if actual != expected:
            raise ValueError(f"{run_dir} was trained on a trunk with SHA-256 {expected[:16]}..., but {weights} now "
                             f"has {actual[:16]}...: the classifier run changed since; restore it or retrain the detector")
    return classifier_run
