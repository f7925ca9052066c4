"""Atomic file writes: a crash mid-write never leaves a partial file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_replace", "atomic_write_text"]


def atomic_replace(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(temp_path)`` for a temporary file next to ``path``, then
    move it onto ``path``; on any error the temporary file is removed and the
    old ``path`` (if any) is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_replace(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))
