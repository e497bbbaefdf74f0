"""Disk faults made deterministic: os.write as a nearly full device answers, for the files
under one directory only (every other write, pytest's own included, goes through)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class FullDisk:
    """os.write as a nearly full device behaves under `root`: `free` bytes more are
    accepted (short writes first), then ENOSPC. Other files are untouched."""

    def __init__(self, root: Path, free: int) -> None:
        self.root, self.free = str(root), free
        self.real = os.write
        self.refused = 0

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not target.startswith(self.root):
            return self.real(fd, data)
        if self.free <= 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real(fd, bytes(data[: self.free]))
        self.free -= n
        return n


class ShortThenZero(FullDisk):
    """A device that takes `free` bytes and then answers 0 bytes written (no errno)."""

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        if self.free <= 0 and os.readlink(f"/proc/self/fd/{fd}").startswith(self.root):
            self.refused += 1
            return 0
        return super().__call__(fd, data)
