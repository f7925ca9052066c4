"""sppnet.atomic: atomic writes, and a full disk as a clear error with nothing partial left."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest

import sppnet.atomic
from sppnet.atomic import DiskFullError, atomic_replace, atomic_write_text, full_disk_errno, remove_stale_temp_files


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("durable", [True, False])
def test_write_replaces_the_file_and_leaves_no_temp(tmp_path, durable):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one", durable=durable)
    atomic_write_text(target, "two", durable=durable)
    assert target.read_text() == "two" and files_in(target.parent) == ["a.txt"]


def test_a_failing_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def write(temp):
        with open(temp, "w") as out:
            out.write("half")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        atomic_replace(target, write)
    assert target.read_text() == "old" and files_in(tmp_path) == ["a.txt"]


def test_full_disk_errno_reads_os_errors_and_rust_messages():
    assert full_disk_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    assert full_disk_errno(OSError(errno.EFBIG, "File too large")) == errno.EFBIG
    # safetensors (Rust) raises SafetensorError with the OS error in its text
    assert full_disk_errno(RuntimeError("Error while serializing: I/O error: File too large (os error 27)")) == 27
    assert full_disk_errno(RuntimeError("IoError(Os { code: 28, kind: StorageFull })")) == 28
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("writer failed") from inner
    except RuntimeError as outer:
        assert full_disk_errno(outer) == errno.ENOSPC
    assert full_disk_errno(OSError(errno.EACCES, "Permission denied")) is None
    assert full_disk_errno(ValueError("os error 13")) is None


def test_disk_full_error_is_an_os_error_that_names_the_file_and_pickles():
    error = DiskFullError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/cache/x.npz")
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename == "/data/cache/x.npz"
    assert str(error).startswith("cannot write /data/cache/x.npz: the disk is full")
    copy = pickle.loads(pickle.dumps(error))  # crosses process boundaries (proposal workers)
    assert type(copy) is DiskFullError and str(copy) == str(error)


# The child loads sppnet/atomic.py by its path (no torch import: fast), lowers
# its file size limit and ignores SIGXFSZ, so that writes past the limit fail
# with EFBIG exactly as they would on a full disk.
CHILD = textwrap.dedent(
    """
    import importlib.util, json, resource, signal, sys
    from pathlib import Path
    import numpy as np
    from safetensors.numpy import save_file

    spec = importlib.util.spec_from_file_location("atomic_under_test", sys.argv[1])
    atomic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(atomic)
    folder = Path(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    cases = {
        "text": lambda: atomic.atomic_write_text(folder / "notes.txt", "x" * 100_000),
        "safetensors": lambda: atomic.atomic_replace(
            folder / "weights.safetensors",
            lambda temp: save_file({"w": np.zeros(10_000, np.float32)}, temp, metadata={"epoch": "2"})),
        "new-file": lambda: atomic.atomic_write_text(folder / "new" / "fresh.txt", "y" * 100_000, durable=False),
    }
    out = {}
    for name, write in cases.items():
        try:
            write()
            out[name] = None
        except OSError as error:
            out[name] = [type(error).__name__, error.errno, error.filename, str(error)]
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_full_disk_is_a_clear_error_and_leaves_the_old_file(tmp_path):
    (tmp_path / "notes.txt").write_text("old notes")
    (tmp_path / "weights.safetensors").write_bytes(b"old weights")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, sppnet.atomic.__file__, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for name, target in (("text", "notes.txt"), ("safetensors", "weights.safetensors"), ("new-file", "new/fresh.txt")):
        kind, code, filename, message = out[name]
        path = tmp_path / target
        assert (kind, code, filename) == ("DiskFullError", errno.EFBIG, str(path))
        assert message.startswith(f"cannot write {path}: the file size limit is reached")
    # the older files are untouched and nothing partial or temporary is left
    assert (tmp_path / "notes.txt").read_text() == "old notes"
    assert (tmp_path / "weights.safetensors").read_bytes() == b"old weights"
    assert files_in(tmp_path) == ["new", "notes.txt", "weights.safetensors"] and files_in(tmp_path / "new") == []


def test_temp_files_of_a_killed_writer_are_removed_on_resume(tmp_path):
    # What kill -9 during atomic_replace leaves: the temp file, next to the old file.
    script = textwrap.dedent(f"""
        import os, signal
        import importlib.util
        spec = importlib.util.spec_from_file_location("atomic", {sppnet.atomic.__file__!r})
        atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)
        def write(temp):
            open(temp, "w").write("half")
            os.kill(os.getpid(), signal.SIGKILL)
        atomic.atomic_replace({str(tmp_path / "sub" / "ckpt.bin")!r}, write)
    """)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ckpt.bin").write_text("old")
    assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL
    assert len(files_in(tmp_path / "sub")) == 2
    assert remove_stale_temp_files(tmp_path) == 1
    assert files_in(tmp_path / "sub") == ["ckpt.bin"] and (tmp_path / "sub" / "ckpt.bin").read_text() == "old"
