"""What a party does when its storage fails under it.

A full disk (StorageFull) is an ordinary refusal: the peer is told `internal` and the party
keeps serving. An I/O error on a write or an fsync (StorageLost) is not: after a failed fsync
the kernel may have dropped the very pages it could not write, and a retried fsync reports
success (PostgreSQL's lesson of 2018), so nothing the process holds can be trusted to be on
disk. The party stops at once, with one line saying why and a non-zero exit, and recovers on
restart from its database and write-ahead log, which hold only what was really committed.

The kill tests' crash points inside a group commit (host.storage.group_commit) are here too:
they are about what a kill there loses.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from host.storage.group_commit import BatchHook, CommitPoint
from host.storage.sqlite import StorageLost

EXIT_STORAGE_LOST = 74  # EX_IOERR

Halt = Callable[[StorageLost], None]


def halt_process(role: str) -> Halt:
    """Stop this process now: no cleanup that could write, no answer that could be believed."""

    def halt(exc: StorageLost) -> None:
        print(f"nettx {role}: stopping, storage failure: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_STORAGE_LOST)

    return halt


#: the crash points inside a group commit (`--crash-at`): its decisions written, not committed;
#: committed, no answer released
GROUP_COMMIT_POINTS = {"group-commit-written": CommitPoint.WRITTEN,
                       "group-commit-durable": CommitPoint.DURABLE}
#: a group commit crash point is taken in the first batch of at least CRASH_BATCH decisions
#: after the first CRASH_AFTER batches (those after a start are mostly the holders' new orders
#: arriving together; later batches mix every kind of decision)
CRASH_BATCH, CRASH_AFTER = 5, 40
#: how long a smaller batch is held at the point, so that decisions queue up behind it
HOLD = 0.02
#: how long the committer pauses inside the chosen batch before the kill: time enough for any
#: answer released too early to reach its peer, so a test would see it
PAUSE = 0.2


def crash_in_batch(crash_at: str | None, crash: Callable[[str], None]) -> BatchHook | None:
    """Tests: the batch hook that takes `crash_at` (`crash`: kill -9 this process, as the
    party's crash points do) in a group commit of several decisions, after pausing there;
    None (no hook at all) unless `crash_at` names a group commit point."""
    point = GROUP_COMMIT_POINTS.get(crash_at or "")
    if point is None:
        return None
    name = crash_at or ""
    log = logging.getLogger("nettx.durability")
    seen = 0

    def hook(at: CommitPoint, decisions: int) -> None:
        nonlocal seen
        if at is not point:
            return
        seen += 1
        if seen <= CRASH_AFTER:
            return
        if decisions < CRASH_BATCH:
            time.sleep(HOLD)
            return
        log.warning("group commit of %d decisions, %s: crash point %s", decisions,
                    point.value, name)
        time.sleep(PAUSE)
        crash(name)

    return hook
