"""Atomic file writes: a crash mid-write never leaves a partial file behind.

:func:`atomic_replace` writes a temporary file next to the target, flushes it
to the disk (``fsync``) and moves it onto the target with ``os.replace``; the
folder is flushed too, so after a power loss the target is either the old
file or the whole new one. On any error the temporary file is removed and the
old target (if any) is untouched. A write that fails because the disk or the
quota is full, or the file size limit (``ulimit -f``) is reached, raises
:class:`DiskFullError`, which names the file and says which limit was hit.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_replace", "atomic_write_text", "remove_stale_temp_files", "DiskFullError", "full_disk_errno"]

# errno -> what it means for the user
_FULL = {
    errno.ENOSPC: ("the disk is full (no space left on device)", "free some space"),
    errno.EFBIG: ("the file size limit is reached (file too large; see `ulimit -f`)", "raise the limit"),
}
if hasattr(errno, "EDQUOT"):  # not on Windows
    _FULL[errno.EDQUOT] = ("the disk quota is exceeded", "free some space or raise the quota")

# How Rust libraries (safetensors) spell an OS error in their exception text:
# "I/O error: File too large (os error 27)" or "Os { code: 28, ... }".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")


class DiskFullError(OSError):
    """A file could not be written because the disk or the quota is full or
    the file size limit is reached. ``errno`` is ENOSPC, EDQUOT or EFBIG and
    ``filename`` the file being written; nothing partial was left behind."""

    def __str__(self) -> str:
        reason, fix = _FULL.get(self.errno, (self.strerror or "the disk is full", "free some space"))
        return (
            f"cannot write {self.filename}: {reason}; nothing was written (an older {Path(str(self.filename)).name}, "
            f"if any, is unchanged): {fix} and run again"
        )


def full_disk_errno(error: BaseException) -> int | None:
    """ENOSPC / EDQUOT / EFBIG when ``error`` (or its cause) says the disk,
    the quota or the file size limit is full, else None. Understands plain
    ``OSError`` and the text of errors raised by Rust code (safetensors)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _FULL:
            return error.errno
        match = _RUST_OS_ERROR.search(str(error)) if not isinstance(error, OSError) else None
        if match:
            code = int(match.group(1) or match.group(2))
            if code in _FULL:
                return code
        error = error.__cause__ or error.__context__
    return None


def atomic_replace(path: str | Path, write: Callable[[str], None], durable: bool = True) -> None:
    """Call ``write(temp_path)`` for a temporary file next to ``path``, then
    move it onto ``path``; on any error the temporary file is removed and the
    old ``path`` (if any) is untouched.

    ``durable`` (default) flushes the new file and its folder to the disk
    (``fsync``) so that it survives a power loss; a cache whose entries carry
    a checksum can pass ``durable=False`` (a lost entry is just recomputed).
    A full disk, quota or file size limit raises :class:`DiskFullError`
    naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp)
        if durable:
            _fsync(temp, os.O_RDONLY)
        os.replace(temp, path)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        code = None if isinstance(error, DiskFullError) else full_disk_errno(error)
        if code is not None:
            raise DiskFullError(code, os.strerror(code), str(path)) from error
        raise
    if durable:
        _fsync_folder(path.parent)


def _fsync(name: str | Path, flags: int) -> None:
    fd = os.open(name, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); folders cannot be opened on Windows."""
    if os.name == "nt":  # pragma: no cover - platform
        return
    try:
        _fsync(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. a file system that refuses fsync on folders: the file itself is safe
        pass


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    atomic_replace(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"), durable=durable)


def remove_stale_temp_files(folder: str | Path) -> int:
    """Delete the temporary files that writes killed mid-way (``kill -9``,
    power loss) left under ``folder``; returns how many. Call it only while
    nothing else writes there (a run being resumed)."""
    removed = 0
    for temp in Path(folder).rglob(".*.tmp"):
        if temp.is_file():
            temp.unlink(missing_ok=True)
            removed += 1
    return removed
