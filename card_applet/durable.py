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
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path


def open_private(path: Path, flags: int) -> int:
    """Open `path` for writing as a file only its owner reads (a trace, a capture): created
    0600, refused if `path` is a symbolic link (one planted there would redirect the
    writes), an existing file others could read tightened to 0600. `flags` adds O_TRUNC or
    O_APPEND. Returns the descriptor; OSError if it cannot be."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | flags, 0o600)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
