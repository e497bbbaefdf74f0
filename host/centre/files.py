"""Small file helpers: secrets are written atomically and mode 0600 from the first byte.

All or nothing (card_applet.durable.write_atomic): a fresh temporary file created
exclusively beside the target, every byte written, fsync, rename, fsync of the directory.
A full disk or an I/O error raises OSError and leaves the old file as it was.
"""

from __future__ import annotations

from pathlib import Path

from card_applet.durable import write_atomic_all


def write_secret(path: Path, data: bytes) -> None:
    write_secrets([(path, data)])


def write_secrets(files: list[tuple[Path, bytes]]) -> None:
    """Several secrets together: none is replaced unless all of them were written."""
    for path, _ in files:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic_all(files)
