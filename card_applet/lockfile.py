"""One card process per card: an exclusive lock beside the state file, held for life.

Two live copies of one EEPROM are a cloned card (each would spend the same counters and
PIN tries independently), so whoever opens a state file for writing first takes
`FILE.lock` with flock(LOCK_EX | LOCK_NB). The lock lives as long as its file description:
a killed process releases it with no stale file to clean up. The lock is on a file beside
the state, not the state itself, because every commit replaces the state file's inode.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from card_applet.store_errors import StateLockedError


def lock_path_for(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".lock")


class StateLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, state_path: Path) -> StateLock:
        path = lock_path_for(state_path)
        try:
            # O_NOFOLLOW: a symlink planted here must not make us create or lock another file
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateLockedError(f"cannot open the lock file {path}: "
                                   f"{exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            raise StateLockedError(f"card state {state_path} is in use by another card "
                                   f"process{holder}; one card, one process") from exc
        with contextlib.suppress(OSError):  # the PID is a courtesy for the error above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the description releases the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    return ""
