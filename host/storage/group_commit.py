"""Group commit: the decisions that wait together share one transaction and one fsync, and
the fsync never runs on the party's event loop.

Why: a durable commit costs an fsync (SQLite in WAL mode with synchronous=FULL), a few ms on a
busy disk. One transaction per decision, committed on the event loop, made the disk's fsync
rate the party's ceiling and stalled every connection during each fsync. So each database
has a thread of its own for its COMMITs, and the event loop only awaits them.

Why only the COMMIT leaves the loop: a decision is a few point reads and writes, microseconds
of SQLite, while every hand-off between two threads of one Python process costs far more (a
wake-up, and the GIL changing hands at each C call either thread makes that releases it:
every statement, every socket send, every HMAC). With the decisions run on the committer
thread, a loaded party spent more CPU passing the GIL back and forth than in SQLite. Now a
batch costs two hand-offs (the loop wakes the thread, the thread wakes the loop), and the
thread runs almost no Python: it waits in COMMIT (in its fsync, the GIL released) for nearly
all of its time. (What the loop can still wait for: another process's write transaction on
the same file, a tool adding an account say, which BEGIN IMMEDIATE waits out; the checkpoints
that copy the log into the database run inside COMMIT, on the thread.)

Theory of operation
-------------------
A caller on an event loop awaits `decide` (a decision: a function of a Tx, as `Engine.run`
takes); any other thread may `submit` one and get a concurrent Future. Queued decisions are
taken together (at most MAX_BATCH) as one batch: one write transaction, each decision inside
its own SAVEPOINT, one COMMIT. The loop's decisions are run on the loop, in a callback
scheduled when the first of them is queued, so a batch gathers every decision its tasks
queued meanwhile; the committer thread then runs the COMMIT, and the loop hands out the
results. Decisions queued while a batch holds the connection (being written or committed)
wait for it, and form the next batch: no timer, so a lone decision is committed at once.
`submit`'s decisions (set-up, tools, tests: no loop to run them on) are run by the committer
thread itself, and so is any decision queued with them.

- Decisions of a batch run one after another in one transaction, each seeing the ones before
  it: the effect is that of running them one at a time, in that order.
- A decision that raises (an illegal move, a replay, a stale request, a broken constraint) is
  rolled back to its savepoint: only its own writes are undone, it gets its own exception,
  and the rest of the batch commits.
- A storage fault (a full disk, an I/O error), in any decision or at COMMIT, rolls the whole
  transaction back: every decision of the batch gets that error, and nothing of the batch is
  written.
- No caller hears of its decision before COMMIT returned, a decision's exception included
  (it may rest on what an earlier decision of the batch wrote). A caller that answers a peer
  after awaiting its decision therefore answers only what is durable: a kill before COMMIT
  loses the whole batch, none of it answered; a kill after it keeps the whole batch, perhaps
  not yet answered (the peer's retransmission then gets the recorded answer). Reads use
  another connection (host.storage.sqlite), which sees a batch only once it is committed.

`durable=False` marks a decision whose loss in a crash of the machine does no harm (a claim
that the next process drops anyway). A batch of only such decisions commits without waiting
for the disk; a batch with any other decision waits, and covers them too. A kill -9 of the
process loses neither: the kernel holds what was written.

A batch hook (tests) is called by the committer thread at the two points below, with the
number of decisions in the batch: the kill tests die there (host.parties.durability).
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from host.storage.base import Tx

T = TypeVar("T")

#: decisions in one transaction at most: bounds how long one COMMIT keeps the rest waiting
MAX_BATCH = 64


class CommitPoint(enum.Enum):
    WRITTEN = "written"  # every decision of the batch written, COMMIT not yet run
    DURABLE = "durable"  # COMMIT returned, no caller told yet


#: called at each CommitPoint with the number of decisions in the batch
BatchHook = Callable[[CommitPoint, int], None]


class Journal(Protocol):
    """One database's write connection, as the committer drives it."""

    def begin(self, durable: bool) -> Tx:
        """Open a write transaction (`durable`: its COMMIT waits for the disk)."""
        ...

    def commit(self) -> None: ...

    def abort(self, error: BaseException) -> BaseException:
        """Roll the open transaction back (if SQLite left one) after `error`; returns the
        error every decision of the batch gets (a storage fault in the engine's terms)."""
        ...

    def is_fault(self, error: BaseException) -> bool:
        """True for an error that says the storage failed: it ends the batch, not one
        decision."""
        ...


@dataclass(eq=False, slots=True)
class _Decision(Generic[T]):
    body: Callable[[Tx], T]
    durable: bool
    #: an asyncio future on `loop`, or (loop None) a concurrent one
    future: asyncio.Future[T] | Future[T]
    loop: asyncio.AbstractEventLoop | None
    result: T | None = None
    error: BaseException | None = None

    def start(self) -> bool:
        """False for a caller that gave up before its decision started: it never runs; from
        here on it cannot be cancelled, and runs to its commit."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()  # type: ignore[union-attr]
        return not self.future.cancelled()

    def tell(self) -> None:
        """Resolve the future (on its loop's thread for an asyncio one)."""
        if self.future.cancelled():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)  # type: ignore[arg-type]


class GroupCommitter:
    """One database's write transactions, batched; their COMMITs on one thread of their own."""

    def __init__(self, journal: Journal, *, name: str, hook: BatchHook | None = None) -> None:
        self._journal, self._hook = journal, hook
        self._pending: deque[_Decision[Any]] = deque()
        self._foreign = 0  # pending decisions of `submit`: the thread runs those
        self._changed = threading.Condition(threading.Lock())
        self._busy = False  # a batch holds the connection: being written, or committed
        self._flusher: asyncio.AbstractEventLoop | None = None  # its flush is scheduled
        self._written: list[_Decision[Any]] | None = None  # for the thread to commit
        self._closing = False
        #: batches committed (or failed) and the decisions in them, for measurement
        self.batches = self.decisions = 0
        self._thread = threading.Thread(target=self._serve, name=f"nettx-commit-{name}",
                                        daemon=True)
        self._thread.start()

    # -- the callers' side ------------------------------------------------------------------------

    async def decide(self, body: Callable[[Tx], T], *, durable: bool = True) -> T:
        """`body` in the next batch; returns once the transaction that holds it committed."""
        loop = asyncio.get_running_loop()
        decision: _Decision[T] = _Decision(body, durable, loop.create_future(), loop)
        with self._changed:
            self._queue(decision)
            # another loop's flush may never run (that loop stopped, or closed, first): one
            # scheduled here as well finds the connection taken, or nothing left, and returns
            schedule = not self._busy and self._flusher is not loop
            if schedule:
                self._flusher = loop
        if schedule:
            # a callback, not now: the batch takes whatever the loop's tasks queue until then
            loop.call_soon(self._flush)
        return await decision.future

    def submit(self, body: Callable[[Tx], T], *, durable: bool = True) -> Future[T]:
        """From any thread but the committer's: `body` in the next batch the committer
        thread runs; its Future resolves once the transaction that holds it committed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a decision cannot wait for another one of its own batch")
        decision: _Decision[T] = _Decision(body, durable, Future(), None)
        with self._changed:
            self._queue(decision)
            self._foreign += 1
            self._changed.notify()
        return decision.future  # type: ignore[return-value]

    def _queue(self, decision: _Decision[Any]) -> None:
        if self._closing:
            raise RuntimeError("the store is closed")
        self._pending.append(decision)

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()

    # -- batches --------------------------------------------------------------------------------

    def _take(self) -> list[_Decision[Any]]:
        """The next batch, under the lock; the connection is then the caller's."""
        batch: list[_Decision[Any]] = []
        while self._pending and len(batch) < MAX_BATCH:
            decision = self._pending.popleft()
            if decision.loop is None:
                self._foreign -= 1
            if decision.start():
                batch.append(decision)
        self._busy = bool(batch)
        return batch

    def _flush(self) -> None:
        """On the loop that scheduled it: write the next batch, then hand it to the thread."""
        with self._changed:
            self._flusher = None
            if self._busy:
                return  # the batch in hand takes the rest up once it is committed
            batch = self._take()
        if not batch:
            return
        if self._write(batch):
            with self._changed:
                self._written = batch
                self._changed.notify()

    def _serve(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._written is not None:
                        batch, written = self._written, True
                        self._written = None
                        break
                    # the thread writes a batch itself for `submit`'s decisions, and when
                    # closing (the loop that would have may be waiting for this thread)
                    if self._pending and not self._busy and (
                            self._flusher is None or self._foreign or self._closing):
                        batch, written = self._take(), False
                        if batch:
                            break
                        continue
                    if self._closing and not self._busy and not self._pending:
                        return
                    self._changed.wait()
            if written or self._write(batch):
                self._commit(batch)

    def _write(self, batch: list[_Decision[Any]]) -> bool:
        """Run the batch's decisions in one open transaction; False (the batch failed and
        was told so) after a storage fault."""
        try:
            tx = self._journal.begin(any(d.durable for d in batch))
        except BaseException as exc:
            self._finish(batch, self._journal.abort(exc))
            return False
        try:
            for decision in batch:
                self._decide(tx, decision)
        except BaseException as exc:
            self._finish(batch, self._journal.abort(exc))
            return False
        return True

    def _decide(self, tx: Tx, decision: _Decision[Any]) -> None:
        tx.execute("SAVEPOINT decision")
        try:
            decision.result = decision.body(tx)
        except Exception as exc:
            if self._journal.is_fault(exc):
                raise
            try:
                tx.execute("ROLLBACK TO decision")
            except Exception:
                # the engine rolled the whole transaction back with it: the batch fails
                raise exc from None
            decision.error = exc
        tx.execute("RELEASE decision")

    def _commit(self, batch: list[_Decision[Any]]) -> None:
        """On the committer thread: COMMIT a written batch, then tell its callers."""
        try:
            self._point(CommitPoint.WRITTEN, len(batch))
            self._journal.commit()
            self._point(CommitPoint.DURABLE, len(batch))
        except BaseException as exc:  # a storage fault, a failed COMMIT: the batch is undone
            self._finish(batch, self._journal.abort(exc))
            return
        self._finish(batch, None)

    def _finish(self, batch: list[_Decision[Any]], failed: BaseException | None) -> None:
        """Free the connection, and tell every caller of the batch its decision (or
        `failed`): a concurrent future here, an asyncio one on its loop. The loop that runs
        the next batch is told to in the same call, after its tasks heard their answers."""
        if failed is not None:
            for decision in batch:
                decision.error = failed
        with self._changed:
            self.batches += 1
            self.decisions += len(batch)
            self._busy = False
            flusher = None
            if self._pending and self._flusher is None and not self._foreign \
                    and not self._closing:
                flusher = self._flusher = self._pending[0].loop
            self._changed.notify()
        here = asyncio._get_running_loop()
        by_loop: dict[asyncio.AbstractEventLoop, list[_Decision[Any]]] = {}
        for decision in batch:
            if decision.loop is None:
                decision.tell()
            else:
                by_loop.setdefault(decision.loop, []).append(decision)
        if flusher is not None:
            by_loop.setdefault(flusher, [])
        for loop, decisions in by_loop.items():
            flush = loop is flusher
            if loop is here:
                self._tell(decisions, flush)
                continue
            try:
                loop.call_soon_threadsafe(self._tell, decisions, flush)
            except RuntimeError:  # that loop is closed: no one there waits any more
                if flush:
                    with self._changed:
                        self._flusher = None
                        self._changed.notify()  # the thread takes the queue up

    def _tell(self, decisions: list[_Decision[Any]], flush: bool) -> None:
        """On a loop: its callers' answers; then (after the tasks they wake have queued what
        they decide next) the next batch."""
        for decision in decisions:
            decision.tell()
        if flush:
            asyncio.get_running_loop().call_soon(self._flush)

    def _point(self, point: CommitPoint, decisions: int) -> None:
        if self._hook is not None:
            self._hook(point, decisions)
