"""Durable file replacement: all the bytes or nothing.

`write_atomic` writes a fresh temporary file beside the target (created exclusively: O_EXCL
and O_NOFOLLOW, mode 0600, a random name, so a file or symlink planted by someone else is
never written through), writes every byte (a short write is retried, a write of nothing is
ENOSPC), fsyncs it, renames it over the target and fsyncs the directory. On any OSError the
temporary file is removed and the target is left as it was; the error propagates.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out; a full device shows up as OSError, never as a
    silently short file."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stage(path: Path, data: bytes) -> Path:
    """A fully written, fsynced temporary file beside `path`; removed again on failure."""
    # mkstemp: O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, unpredictable name
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write_atomic_all(files: Sequence[tuple[Path, bytes]]) -> None:
    """Replace several files together: every one is staged (written and fsynced) before any
    is renamed, so a full disk or an I/O error while writing replaces none of them."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            staged.append((_stage(path, data), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()  # the ones not renamed yet
        raise
    # after the rename the new files are in place; a failure here still raises: the caller
    # must not take the write for durable
    for directory in dict.fromkeys(path.parent for _, path in staged):
        fsync_directory(directory)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (mode 0600), or raise OSError and leave `path` untouched."""
    write_atomic_all([(path, data)])
