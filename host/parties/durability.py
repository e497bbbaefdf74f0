"""What a party does when its storage fails under it.

A full disk (StorageFull) is an ordinary refusal: the peer is told `internal` and the party
keeps serving. An I/O error on a write or an fsync (StorageLost) is not: after a failed fsync
the kernel may have dropped the very pages it could not write, and a retried fsync reports
success (PostgreSQL's lesson of 2018), so nothing the process holds can be trusted to be on
disk. The party stops at once, with one line saying why and a non-zero exit, and recovers on
restart from its database and write-ahead log, which hold only what was really committed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from host.storage.sqlite import StorageLost

EXIT_STORAGE_LOST = 74  # EX_IOERR

Halt = Callable[[StorageLost], None]


def halt_process(role: str) -> Halt:
    """Stop this process now: no cleanup that could write, no answer that could be believed."""

    def halt(exc: StorageLost) -> None:
        print(f"nettx {role}: stopping, storage failure: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_STORAGE_LOST)

    return halt
