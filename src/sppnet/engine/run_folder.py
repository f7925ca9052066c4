"""The run folder of a detector: refused when it holds another run, its
``config.yaml`` checked on ``--resume`` and written by rank 0."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from sppnet.atomic import atomic_write_text, remove_stale_temp_files
from sppnet.config import from_dict, to_dict
from sppnet.engine import distributed

__all__ = ["open_run_folder"]


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
