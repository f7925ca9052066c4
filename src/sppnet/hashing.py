"""SHA-256 of files: what caches and run folders pin their inputs by."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

__all__ = ["file_sha256", "file_sha256_uncached"]


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; a file whose size and mtime have not
    changed is not read again."""
    path = Path(path)
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256_uncached(Path(path))


def file_sha256_uncached(path: Path) -> str:
    """SHA-256 of the file's bytes, read now: for callers that must see a file
    rewritten within the same second as the last read (same size and mtime)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
