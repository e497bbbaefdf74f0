"""Group commit: the decisions that wait together share one transaction and one fsync, and
none of them runs on the party's event loop.

Why: a durable commit costs an fsync (SQLite in WAL mode with synchronous=FULL), a few ms on a
busy disk. One transaction per decision, run on the event loop, made the disk's fsync rate
the party's ceiling and stalled every connection during each fsync. Here one thread per
database owns its write connection; the event loop only queues a decision and awaits it.

Theory of operation
-------------------
A caller `submit`s a decision (a function of a Tx, as `Engine.run` takes) and gets a Future.
The committer thread takes every decision queued (at most MAX_BATCH) as one batch: one write
transaction, each decision inside its own SAVEPOINT, one COMMIT. A batch forms from whatever
arrived while the previous COMMIT ran: no timer, so a lone decision is committed at once.

- Decisions of a batch run one after another in one transaction, each seeing the ones before
  it: the effect is that of running them one at a time, in that order.
- A decision that raises (an illegal move, a replay, a stale request, a broken constraint) is
  rolled back to its savepoint: only its own writes are undone, it gets its own exception,
  and the rest of the batch commits.
- A storage fault (a full disk, an I/O error), in any decision or at COMMIT, rolls the whole
  transaction back: every decision of the batch gets that error, and nothing of the batch is
  written.
- No Future is resolved before COMMIT returned, a decision's exception included (it may rest
  on what an earlier decision of the batch wrote). A caller that answers a peer after
  awaiting its decision therefore answers only what is durable: a kill before COMMIT loses
  the whole batch, none of it answered; a kill after it keeps the whole batch, perhaps not
  yet answered (the peer's retransmission then gets the recorded answer).

`durable=False` marks a decision whose loss in a crash of the machine does no harm (a claim
that the next process drops anyway). A batch of only such decisions commits without waiting
for the disk; a batch with any other decision waits, and covers them too. A kill -9 of the
process loses neither: the kernel holds what was written.

A batch hook (tests) is called by the committer thread at the two points above, with the
number of decisions in the batch: the kill tests die there (host.parties.durability).
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from host.storage.base import Tx

T = TypeVar("T")

#: decisions in one transaction at most: bounds how long one COMMIT keeps the rest waiting
MAX_BATCH = 64


class CommitPoint(enum.Enum):
    WRITTEN = "written"  # every decision of the batch written, COMMIT not yet run
    DURABLE = "durable"  # COMMIT returned, no caller told yet


#: called at each CommitPoint with the number of decisions in the batch
BatchHook = Callable[[CommitPoint, int], None]
#: opens one write transaction (`durable`: its COMMIT waits for the disk) and yields its Tx
Opener = Callable[[bool], AbstractContextManager[Tx]]
#: True for an error that says the storage failed (it ends the batch, not one decision)
IsFault = Callable[[BaseException], bool]


@dataclass(eq=False, slots=True)
class _Decision(Generic[T]):
    body: Callable[[Tx], T]
    durable: bool
    future: Future[T] = field(default_factory=Future)
    result: T | None = None
    error: Exception | None = None


class GroupCommitter:
    """One database's write transactions, batched, on one thread of their own."""

    def __init__(self, open_transaction: Opener, is_fault: IsFault, *, name: str,
                 hook: BatchHook | None = None) -> None:
        self._open, self._is_fault, self._hook = open_transaction, is_fault, hook
        self._queue: deque[_Decision[Any]] = deque()
        self._ready = threading.Condition()
        self._closing = False
        #: batches committed (or failed) and the decisions in them, for measurement
        self.batches = self.decisions = 0
        self._thread = threading.Thread(target=self._serve, name=f"nettx-commit-{name}",
                                        daemon=True)
        self._thread.start()

    def submit(self, body: Callable[[Tx], T], *, durable: bool = True) -> Future[T]:
        """Queue `body`; its Future resolves once the transaction that holds it committed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a decision cannot wait for another one of its own batch")
        decision: _Decision[T] = _Decision(body, durable)
        with self._ready:
            if self._closing:
                raise RuntimeError("the store is closed")
            self._queue.append(decision)
            self._ready.notify()
        return decision.future

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._queue:
                    return  # closing, and everything queued was committed
                batch = []
                while self._queue and len(batch) < MAX_BATCH:
                    decision = self._queue.popleft()
                    # a caller that gave up before its decision started: it never runs; from
                    # here on it cannot be cancelled, and runs to its commit
                    if decision.future.set_running_or_notify_cancel():
                        batch.append(decision)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Decision[Any]]) -> None:
        self.batches += 1
        self.decisions += len(batch)
        try:
            with self._open(any(d.durable for d in batch)) as tx:
                for decision in batch:
                    self._decide(tx, decision)
                self._point(CommitPoint.WRITTEN, len(batch))
            self._point(CommitPoint.DURABLE, len(batch))
        except BaseException as exc:  # a storage fault, a failed COMMIT: the batch is undone
            for decision in batch:
                decision.future.set_exception(exc)
            return
        for decision in batch:
            if decision.error is not None:
                decision.future.set_exception(decision.error)
            else:
                decision.future.set_result(decision.result)

    def _decide(self, tx: Tx, decision: _Decision[Any]) -> None:
        tx.execute("SAVEPOINT decision")
        try:
            decision.result = decision.body(tx)
        except Exception as exc:
            if self._is_fault(exc):
                raise
            try:
                tx.execute("ROLLBACK TO decision")
            except Exception:
                # the engine rolled the whole transaction back with it: the batch fails
                raise exc from None
            decision.error = exc
        tx.execute("RELEASE decision")

    def _point(self, point: CommitPoint, decisions: int) -> None:
        if self._hook is not None:
            self._hook(point, decisions)
