"""Group commit (host.storage.group_commit on the SQLite engine): the decisions queued
together share one transaction; each is isolated from the others; nobody hears of a decision
before the COMMIT that holds it; a storage fault undoes the whole batch; and a kill -9 inside
a group commit loses the whole batch, unanswered, before COMMIT, and nothing after it."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from host.errors import TransactionError
from host.parties.seller import SellerServer
from host.protocol.messages import OrderOutcome, OutcomeStatus
from host.storage.base import Schema, Tx
from host.storage.group_commit import CommitPoint
from host.storage.ledger import Ledger
from host.storage.order_book import IllegalTransition, OrderStatus
from host.storage.sqlite import Database, StorageFull, StorageLost
from tests.host.market import Market
from tests.host.stores import decided
from tests.host.test_ledger import ACCOUNT, APPROVE, Rules, order
from tests.host.test_storage_faults import FULL, IOERR, inject

TABLE = Schema("t", "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);",
               ())
REPO = Path(__file__).resolve().parents[2]


def put(k: int, v: str = "x") -> Callable[[Tx], int]:
    def body(tx: Tx) -> int:
        tx.execute("INSERT INTO t VALUES (?, ?)", (k, v))
        return k
    return body


def keys(db: Database) -> list[int]:
    return [row[0] for row in db.read(lambda tx: tx.all("SELECT k FROM t ORDER BY k"))]


class Gate:
    """A batch hook that holds the first batch at `point` until `open` is called, and
    records every batch's size at every point."""

    def __init__(self, point: CommitPoint = CommitPoint.WRITTEN) -> None:
        self.point = point
        self.held = threading.Event()
        self.opened = threading.Event()
        self.sizes: list[tuple[CommitPoint, int]] = []

    def __call__(self, at: CommitPoint, decisions: int) -> None:
        self.sizes.append((at, decisions))
        if at is self.point and not self.opened.is_set():
            self.held.set()
            assert self.opened.wait(30)

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[Database, Gate]]:
    gate = Gate()
    db = Database(tmp_path / "t.sqlite", TABLE, batch_hook=gate)
    yield db, gate
    gate.open()
    db.close()


def held_batch(db: Database, gate: Gate, bodies: list[Callable[[Tx], object]]
               ) -> list[object]:
    """One first decision held at the gate while `bodies` queue behind it; then all of them
    run; returns each body's result or exception (the first decision's left out)."""
    first = db.committer.submit(put(0))
    assert gate.held.wait(30)
    futures = [db.committer.submit(body) for body in bodies]
    gate.open()
    assert first.result(30) == 0
    out: list[object] = []
    for future in futures:
        try:
            out.append(future.result(30))
        except Exception as exc:
            out.append(exc)
    return out


def test_decisions_queued_during_a_commit_share_the_next_one(
        gated: tuple[Database, Gate]) -> None:
    db, gate = gated
    assert held_batch(db, gate, [put(k) for k in range(1, 9)]) == list(range(1, 9))
    # the held batch, then one batch of the eight that queued behind it
    assert [n for at, n in gate.sizes if at is CommitPoint.DURABLE] == [1, 8]
    assert (db.committer.batches, db.committer.decisions) == (2, 9)
    assert keys(db) == list(range(9))


def test_a_decision_that_raises_undoes_only_itself(gated: tuple[Database, Gate]) -> None:
    db, gate = gated

    def refused(tx: Tx) -> None:
        tx.execute("INSERT INTO t VALUES (100, 'half')")  # written, then undone
        raise IllegalTransition(bytes(16), OrderStatus.COMPLETED, OrderStatus.VOIDING)

    def duplicate(tx: Tx) -> None:
        tx.execute("INSERT INTO t VALUES (1, 'again')")  # the first decision's key

    out = held_batch(db, gate, [put(1), refused, put(2), duplicate, put(3)])
    assert out[0::2] == [1, 2, 3]
    assert isinstance(out[1], IllegalTransition)  # its own exception, not the batch's
    assert isinstance(out[3], sqlite3.IntegrityError)
    assert [n for at, n in gate.sizes if at is CommitPoint.DURABLE] == [1, 5]
    assert keys(db) == [0, 1, 2, 3]
    assert db.read(lambda tx: tx.one("SELECT v FROM t WHERE k = 1")) == ("x",)


def test_no_one_hears_of_a_decision_before_its_commit(tmp_path: Path) -> None:
    for point in CommitPoint:
        gate = Gate(point)
        db = Database(tmp_path / f"{point.value}.sqlite", TABLE, batch_hook=gate)
        try:
            future = db.committer.submit(put(1))
            assert gate.held.wait(30)
            time.sleep(0.05)
            assert not future.done()  # held before COMMIT, or after it: no answer yet
            # a read sees only what is committed: nothing before COMMIT, all of it after
            assert keys(db) == ([] if point is CommitPoint.WRITTEN else [1])
            gate.open()
            assert future.result(30) == 1 and keys(db) == [1]
        finally:
            gate.open()
            db.close()


def test_an_awaited_decision_returns_after_its_commit_which_runs_off_the_loop(
        tmp_path: Path) -> None:
    seen: list[str] = []

    def hook(at: CommitPoint, _decisions: int) -> None:
        seen.append(threading.current_thread().name)

    db = Database(tmp_path / "t.sqlite", TABLE, batch_hook=hook)
    try:
        async def decide_many() -> list[int]:
            return list(await asyncio.gather(*(db.decide(put(k)) for k in range(20))))

        assert asyncio.run(decide_many()) == list(range(20))
        assert keys(db) == list(range(20))  # every one readable once awaited
        assert seen and all(name.startswith("nettx-commit-") for name in seen)
        assert db.committer.batches < 20  # the gathered decisions shared commits
    finally:
        db.close()


def test_a_blocking_decision_on_the_loop_while_its_batch_waits_to_be_written(
        tmp_path: Path) -> None:
    """`run` blocks its caller; called on the loop itself while a decision of the loop waits
    for the loop to write its batch, the committer thread takes both up (no deadlock)."""
    db = Database(tmp_path / "t.sqlite", TABLE)
    try:
        async def both() -> int:
            queued = asyncio.ensure_future(db.decide(put(1)))
            await asyncio.sleep(0)  # queued, its batch scheduled on this loop
            # as `run` does, blocking the loop: the thread must not wait for the loop
            assert db.committer.submit(put(2)).result(10) == 2
            return await queued

        assert asyncio.run(both()) == 1 and keys(db) == [1, 2]
    finally:
        db.close()


def test_a_loop_gone_with_its_batch_unwritten_does_not_stall_the_next(tmp_path: Path) -> None:
    """A loop that stopped (and closed) before running the batch one of its tasks scheduled:
    the next loop's decision is written and committed, and the orphaned one with it."""
    db = Database(tmp_path / "t.sqlite", TABLE)
    try:
        gone = asyncio.new_event_loop()
        orphan = gone.create_task(db.decide(put(1)))
        gone.call_soon(gone.stop)  # after the task's first step: its batch never runs there
        gone.run_forever()
        gone.close()
        assert not orphan.done()

        async def next_one() -> int:
            return await asyncio.wait_for(db.decide(put(2)), 10)

        assert asyncio.run(next_one()) == 2 and keys(db) == [1, 2]
    finally:
        db.close()


def test_closing_while_the_loop_is_blocked_commits_what_it_queued(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.sqlite", TABLE)

    async def close_with_one_queued() -> int:
        queued = asyncio.ensure_future(db.decide(put(7)))
        await asyncio.sleep(0)
        # closed while the loop is blocked, its batch not yet written: the thread commits it
        closing = threading.Thread(target=db.close, daemon=True)
        closing.start()
        closing.join(10)
        assert not closing.is_alive(), "close waited for the blocked loop"
        return await queued

    assert asyncio.run(close_with_one_queued()) == 7
    db = Database(tmp_path / "t.sqlite", TABLE)
    try:
        assert keys(db) == [7]
    finally:
        db.close()


@pytest.mark.parametrize(("error", "fault"), [(FULL, StorageFull), (IOERR, StorageLost)])
def test_a_failed_commit_fails_every_decision_of_its_batch(
        gated: tuple[Database, Gate], error: str, fault: type[Exception]) -> None:
    db, gate = gated
    first = db.committer.submit(put(0))
    assert gate.held.wait(30)
    faulty = inject(db, error)  # from the next batch's COMMIT on
    futures = [db.committer.submit(put(k)) for k in range(1, 5)]
    gate.open()
    assert first.result(30) == 0
    for future in futures:
        with pytest.raises(fault):
            future.result(30)
    assert faulty.failed == 1  # one COMMIT for the four: one failure for the four
    assert keys(db) == [0]  # nothing of the batch written
    assert not db.conn.in_transaction
    faulty.armed = False
    if fault is StorageLost:  # the database refuses to go on: the party stops
        with pytest.raises(StorageLost):
            db.run(put(9))
    else:
        assert db.run(put(9)) == 9 and keys(db) == [0, 9]


def test_a_fault_inside_one_decision_fails_the_whole_batch(gated: tuple[Database, Gate]
                                                           ) -> None:
    db, gate = gated

    def full(tx: Tx) -> None:
        tx.execute("INSERT INTO t VALUES (50, 'half')")
        raise sqlite3.OperationalError(FULL)  # as SQLite raises it from a statement

    out = held_batch(db, gate, [put(1), full, put(2)])
    assert all(isinstance(o, StorageFull) for o in out), out
    assert all(isinstance(o, TransactionError) and o.code == "internal" for o in out)
    assert keys(db) == [0]


def test_a_claim_alone_does_not_wait_for_the_disk(tmp_path: Path) -> None:
    """durable=False (a claim in a store one process owns): committed with
    synchronous=NORMAL, unless a durable decision shares its batch."""
    modes: list[int] = []
    db = Database(tmp_path / "t.sqlite", TABLE,
                  batch_hook=lambda at, _n: modes.append(
                      db.conn.execute("PRAGMA synchronous").fetchone()[0])
                  if at is CommitPoint.WRITTEN else None)
    try:
        async def one(durable: bool) -> None:
            await db.decide(put(len(modes)), durable=durable)

        asyncio.run(one(False))
        asyncio.run(one(True))
        assert modes == [1, 2]  # NORMAL, then FULL
        assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # restored
        assert keys(db) == [0, 1]
    finally:
        db.close()


# -- kill -9 inside a group commit --------------------------------------------------------------

CHILD = r"""
import os, sys, threading, time
from pathlib import Path
from host.storage.group_commit import CommitPoint
from host.storage.ledger import Ledger
from host.storage.base import Schema
from host.storage.sqlite import Database
TABLE = Schema("t", "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);", ())
def put(k):
    return lambda tx: tx.execute("INSERT INTO t VALUES (?, 'x')", (k,))
path, point, n = Path(sys.argv[1]), CommitPoint(sys.argv[2]), int(sys.argv[3])
held, queued = threading.Event(), threading.Event()
def hook(at, decisions):
    if not queued.is_set() and at is CommitPoint.WRITTEN:
        held.set()
        queued.wait()  # the first batch waits until the n decisions queued behind it
    elif decisions == n and at is point:
        say(f"paused {decisions}")
        time.sleep(600)  # killed here
def say(line):  # one write: two threads' lines never interleave
    os.write(1, (line + "\n").encode())
db = Database(path, TABLE, batch_hook=hook)
first = db.committer.submit(put(0))
held.wait()
futures = [db.committer.submit(put(k)) for k in range(1, n + 1)]
queued.set()
first.result()
say("first answered")
for k, future in enumerate(futures, 1):
    future.result()
    say(f"answered {k}")
"""


@pytest.mark.parametrize("point", list(CommitPoint), ids=lambda p: p.value)
def test_a_kill_inside_a_group_commit(tmp_path: Path, point: CommitPoint) -> None:
    """Before COMMIT: the batch is lost, none of it answered. After COMMIT, before the
    answers: all of it stands (the peers' retries get it from the record). Never a part."""
    path, n = tmp_path / "t.sqlite", 6
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), point.value, str(n)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        lines = {child.stdout.readline().strip(), child.stdout.readline().strip()}
        assert lines == {"first answered", f"paused {n}"}, lines
        time.sleep(0.2)  # had any answer been released, it would be printed by now
    finally:
        child.kill()  # SIGKILL
        out, _err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert out.strip() == ""  # no decision of the batch was answered
    db = Database(path, TABLE)
    try:
        expected = [0] if point is CommitPoint.WRITTEN else list(range(n + 1))
        assert keys(db) == expected
    finally:
        db.close()


def test_the_card_managers_decision_is_made_durable_by_the_record_of_its_answer(
        tmp_path: Path) -> None:
    """The authorisation commits without waiting for the disk; the record of its answer,
    which comes before the answer is sent, waits, and its fsync covers both."""
    modes: list[int] = []
    stores: list[Ledger] = []

    def hook(at: CommitPoint, _decisions: int) -> None:
        if at is CommitPoint.WRITTEN:
            db = stores[0].db
            assert isinstance(db, Database)
            modes.append(db.conn.execute("PRAGMA synchronous").fetchone()[0])

    stores.append(Ledger(tmp_path / "ledger.sqlite", batch_hook=hook))
    ledger = stores[0]
    try:
        ledger.add_account(ACCOUNT)
        decision, _seen = decided(ledger.authorise(order(1), Rules(APPROVE)))
        assert decided(ledger.record_answer(order(1).order_id, b"frame")) == b"frame"
        assert decided(ledger.reverse(order(1).order_id, "seller:shop.example",
                                      decision.digest)).code == "reversed"
        assert decided(ledger.record_reversal(order(1).order_id, b"rev")) == b"rev"
        # FULL (2) for the account, NORMAL (1) for the decision, FULL for its answer's record
        assert modes == [2, 1, 2, 1, 2]
    finally:
        ledger.close()


def test_two_tasks_of_one_seller_never_drive_one_order_at_once(market: Market) -> None:
    """The claim is awaited now (a decision): a second task that looks while the first
    awaits it must find the order taken, not drive it too (two drives would both record
    AUTHORISING, and one would fail on the other's move)."""
    seller = market.servers["seller"]
    assert isinstance(seller, SellerServer)
    order_id = bytes(range(16))
    driving: list[int] = []

    async def drive_now(oid: bytes, _opened: object, _overdue: bool) -> OrderOutcome:
        driving.append(1)
        assert len(driving) == 1, "two drives of one order at once"
        await asyncio.sleep(0.05)
        driving.pop()
        return OrderOutcome(oid, OutcomeStatus.PENDING, "driven")

    async def both() -> list[OrderOutcome]:
        await seller.orders.receive(order_id, b"envelope", "holder:a@example.org", 100,
                                    bytes(32), ["amount"])
        seller._drive_now = drive_now  # type: ignore[method-assign]
        return list(await asyncio.gather(seller._drive(order_id), seller._drive(order_id)))

    outcomes = market.run(both())
    assert sorted(o.reason for o in outcomes) == ["being processed", "driven"]
