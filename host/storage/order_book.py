"""The seller's order book: every order received, its status along the transition table, and
the exact answer the holder is sent once it is final.

Theory of operation
-------------------
An order is one row, and its status says how far the seller got with it and what may exist
at the card manager because of it. Only the seller's driver (host.parties.seller, the pure
steps in host.parties.lifecycle) moves an order, one driver per order at a time, and only
along TRANSITIONS: `move` re-reads the status inside its own transaction and refuses any other
move (IllegalTransition, nothing written), so a driver acting on a stale view cannot undo what
another path recorded. Every move is one decision (committed alone, or with others in a group
commit, each isolated: host.storage.group_commit): a seller killed at any instant leaves
the order at exactly one status, and on restart (and every few seconds) it drives every
unfinished order again from that status.

    RECEIVED     recorded by the holder's `order`, once the seller's part checked out, before
                 anything is forwarded. Killed here: nothing left, the driver starts over.
    AUTHORISING  recorded by the driver once the card manager passed confirmation, just
                 before the request leaves: from here on a debit may exist. Killed here: the
                 request may or may not have arrived; the driver sends it again, and the card
                 manager answers a retransmission with its recorded decision, never a second
                 debit.
    APPROVED     the card manager's authorisation verified (its MAC over this order's digest,
                 the amount the order's), recorded with that MAC and the holder's receipt.
                 Killed here: the driver sends the delivery request again with the recorded
                 MAC; the delivery company answers it from its record, never a second
                 shipment.
    VOIDING      the order will not complete (a final refusal, an answer whose MAC does not
                 verify, another amount approved, or not completed in time) but a debit may
                 exist; `note` says why. Killed here: the driver sends `reverse` again; the
                 card manager credits an approval back once and answers a repeat from its
                 record.
    COMPLETED, DECLINED, FAILED
                 final, recorded with the outcome and the exact frame the holder is sent;
                 nothing moves them again, since the holder may have been told.

One driver per order, across instances: several seller processes may share one order book
(on PostgreSQL), each resuming unfinished orders. A driver first `claim`s the order: the
claim is a row's (driver, lease) pair, taken in a transaction, so the database, not any
process's memory, says who drives it. A new order is claimed in the decision that records
it (no other instance can hold it yet), and the move that makes an order final releases
the claim, so a drive that completes costs no decision of its own for the claim. A claim
lasts CLAIM_LEASE seconds and every move by its holder renews it; a seller killed mid-drive
leaves a claim that expires, and another instance (or the same one restarted) takes the
order over. A SQLite order book belongs to one seller
process, so a seller opening one drops every claim in it at once; for the same reason a
claim there, and its release, need not wait for the disk (`durable=False`: a crash of the
machine may lose it, and the next process drops it anyway). A move by an instance
whose claim was taken over is refused (IllegalTransition): the late driver cannot overwrite
what the new one recorded. The lease outlasts any one step of a drive (each exchange with a
peer is bounded by its read timeout).

FAILED is reachable from RECEIVED directly only because AUTHORISING is recorded before the
request leaves: an order still RECEIVED has provably sent nothing the card manager could
debit (it failed confirmation, or stayed unreachable until the order was overdue). From
AUTHORISING on, a request may have arrived and its answer been lost, so the only way to fail
is through VOIDING: the card manager cancels any charge, or records the order voided so a
late request for it is refused as a replay.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from host.errors import TransactionError
from host.storage.base import VIEWS_POSTGRESQL, Row, Schema, Tx, record_view, replay_error
from host.storage.group_commit import BatchHook
from host.storage.location import Location, open_database

# the orders not final: what the seller resumes every few seconds, through an index of them
# alone rather than a scan of every order it ever took (the planner uses a partial index for
# a query whose WHERE holds the index's own)
UNFINISHED = "status IN ('received', 'authorising', 'approved', 'voiding')"

ORDERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id BLOB PRIMARY KEY,        -- the seller's replay cache
    envelope BLOB NOT NULL,           -- kept: to resume after a crash, and to reconcile
    holder   TEXT NOT NULL,
    amount   INTEGER NOT NULL,
    digest   BLOB NOT NULL,           -- the order digest: enough to void it without the key
    status   TEXT NOT NULL,           -- see OrderStatus
    note     TEXT,                    -- why the order is being voided
    approval BLOB,                    -- the card manager's authorisation MAC, once approved
    receipt  BLOB,                    -- and its receipt for the holder
    outcome  BLOB,                    -- the outcome message, once final
    answer   BLOB,                    -- and the exact frame the holder is sent for it
    since    INTEGER NOT NULL,        -- when it was received
    at       INTEGER NOT NULL,        -- last change
    driver   TEXT,                    -- the seller instance driving it (see `claim`)
    lease    REAL                     -- and until when its claim holds
);
""" + f"CREATE INDEX IF NOT EXISTS orders_unfinished ON orders (status) WHERE {UNFINISHED};"

# how long a claim on an order holds without a move by its holder, in seconds
CLAIM_LEASE = 45.0

# The same table on PostgreSQL, as versioned migration steps (host.storage.postgresql).
ORDERS_POSTGRESQL = ("""
CREATE TABLE orders (
    order_id bytea PRIMARY KEY,
    envelope bytea NOT NULL,
    holder   text NOT NULL,
    amount   bigint NOT NULL,
    digest   bytea NOT NULL,
    status   text NOT NULL CHECK (status IN ('received', 'authorising', 'approved', 'voiding',
                                             'completed', 'declined', 'failed')),
    note     text,
    approval bytea,
    receipt  bytea,
    outcome  bytea,
    answer   bytea,
    since    bigint NOT NULL,
    at       bigint NOT NULL
);
""" + VIEWS_POSTGRESQL, """
ALTER TABLE orders ADD COLUMN driver text, ADD COLUMN lease double precision;
""", """
CREATE INDEX orders_unfinished ON orders (status)
    WHERE status IN ('received', 'authorising', 'approved', 'voiding');
""")

ORDERS = Schema("orders", ORDERS_SCHEMA, ORDERS_POSTGRESQL,
                {"orders": {"answer": "BLOB", "driver": "TEXT", "lease": "REAL"}})


class OrderStatus(enum.StrEnum):
    RECEIVED = "received"  # recorded; nothing sent to the card manager yet
    AUTHORISING = "authorising"  # the request went out: a debit may exist from now on
    APPROVED = "approved"  # debited, the delivery company not yet answered
    VOIDING = "voiding"  # will not complete: the card manager must cancel any charge
    COMPLETED = "completed"
    DECLINED = "declined"
    FAILED = "failed"  # and no charge stands, when the card manager's receipt says so

    @property
    def final(self) -> bool:
        return self in (OrderStatus.COMPLETED, OrderStatus.DECLINED, OrderStatus.FAILED)


S = OrderStatus
# The only moves an order makes (docs/protocol.md section 7). A final status has none: the
# holder may have been told it. FAILED comes from RECEIVED only while nothing has left for the
# card manager; once AUTHORISING, a debit may exist and the way out of it is VOIDING.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.RECEIVED: frozenset({S.AUTHORISING, S.VOIDING, S.FAILED}),
    S.AUTHORISING: frozenset({S.APPROVED, S.DECLINED, S.VOIDING}),
    S.APPROVED: frozenset({S.COMPLETED, S.VOIDING}),
    S.VOIDING: frozenset({S.FAILED}),
    S.COMPLETED: frozenset(),
    S.DECLINED: frozenset(),
    S.FAILED: frozenset(),
}


def legal(old: OrderStatus, new: OrderStatus) -> bool:
    return new in TRANSITIONS[old]


class IllegalTransition(TransactionError):
    """A move the transition table forbids (another path moved the order first): nothing is
    written, and the caller re-reads the order."""

    def __init__(self, order_id: bytes, old: OrderStatus | None, new: OrderStatus) -> None:
        super().__init__("internal", f"order {order_id.hex()}: "
                                     f"{old.value if old else 'unknown'} -> {new.value} refused")
        self.old, self.new = old, new


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as the book holds it now."""

    order_id: bytes
    envelope: bytes
    digest: bytes
    status: OrderStatus
    since: int
    note: str | None
    outcome: bytes | None  # the outcome fields (CBOR), once final
    answer: bytes | None  # the exact `outcome` frame the holder is sent, once final


@runtime_checkable
class OrderStore(Protocol):
    """The seller's store, whatever engine holds it."""

    async def receive(self, order_id: bytes, envelope: bytes, holder: str, amount: int,
                      digest: bytes, fields: Iterable[str], *, claim: bool = False) -> None:
        """Record a new order as RECEIVED; an order id seen before raises `replay`.
        `claim`: this instance claims it in the same decision (it drives it next)."""
        ...

    async def move(self, order_id: bytes, new: OrderStatus, *, outcome: bytes | None = None,
                   answer: bytes | None = None, note: str | None = None,
                   approval: tuple[bytes, bytes] | None = None) -> None:
        """Move the order along TRANSITIONS, or raise IllegalTransition and write nothing. A
        move renews this instance's claim on the order; a move to a final status releases
        it."""
        ...

    async def claim(self, order_id: bytes) -> bool:
        """Take the order to drive it, or renew this instance's claim; False while another
        instance's claim holds."""
        ...

    async def release(self, order_id: bytes) -> None:
        """Give up this instance's claim (the drive stopped: final, or pending for later)."""
        ...

    def approval(self, order_id: bytes) -> tuple[bytes, bytes]: ...

    def get(self, order_id: bytes) -> OrderRecord | None: ...

    def status(self, order_id: bytes) -> tuple[OrderStatus, bytes | None] | None: ...

    def unfinished(self) -> list[OrderRecord]: ...

    def close(self) -> None: ...


_MOVE = ("UPDATE orders SET status = ?, outcome = coalesce(?, outcome), "
         "answer = coalesce(?, answer), note = coalesce(?, note), "
         "approval = coalesce(?, approval), receipt = coalesce(?, receipt), at = ?, ")
# then the mover's claim: renewed (driver, lease), or released by a final move (driver,
# driver); every expression of a SET reads the row as it was, the driver not yet cleared
_RENEW = _MOVE + "lease = CASE WHEN driver = ? THEN ? ELSE lease END WHERE order_id = ?"
_RELEASE = _MOVE + ("lease = CASE WHEN driver = ? THEN NULL ELSE lease END, "
                    "driver = CASE WHEN driver = ? THEN NULL ELSE driver END WHERE order_id = ?")


class OrderBook:
    """The order book on either engine (`location`: a SQLite file, or a PostgreSQL URL)."""

    def __init__(self, location: Location, *, lease: float = CLAIM_LEASE,
                 batch_hook: BatchHook | None = None) -> None:
        self.db = open_database(location, ORDERS, batch_hook=batch_hook)
        # this instance, as its claims name it: new with every process (and every book)
        self.instance = secrets.token_hex(8)
        self.lease = lease
        if not self.db.shared:
            # a store only this process uses: a claim in it is a dead predecessor's, and this
            # process resumes its orders at once rather than after the lease
            self.db.run(lambda tx: tx.execute(
                "UPDATE orders SET driver = NULL, lease = NULL WHERE driver IS NOT NULL"))

    def close(self) -> None:
        self.db.close()

    async def receive(self, order_id: bytes, envelope: bytes, holder: str, amount: int,
                      digest: bytes, fields: Iterable[str], *, claim: bool = False) -> None:
        now = time.time()
        # a new order: no other instance can hold a claim on it, so the claim is taken here,
        # in the same decision, rather than in one more
        driver, lease = (self.instance, now + self.lease) if claim else (None, None)

        def receive(tx: Tx) -> None:
            # looked up, not caught as a key violation: under concurrency PostgreSQL refuses
            # the loser of two inserts as a serialisation failure, and its retry lands here
            if tx.one("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)) is not None:
                raise replay_error(order_id)
            tx.execute(
                "INSERT INTO orders (order_id, envelope, holder, amount, digest, status, "
                "since, at, driver, lease) VALUES (?, ?, ?, ?, ?, 'received', ?, ?, ?, ?)",
                (order_id, envelope, holder, amount, digest, int(now), int(now), driver, lease))
            record_view(tx, order_id, fields)

        await self.db.decide(receive)

    async def move(self, order_id: bytes, new: OrderStatus, *, outcome: bytes | None = None,
                   answer: bytes | None = None, note: str | None = None,
                   approval: tuple[bytes, bytes] | None = None) -> None:
        """Move the order to `new`, re-reading its status inside the transaction: a move the
        table forbids raises IllegalTransition and writes nothing. A final status carries the
        outcome and the answer frame; APPROVED carries (authorisation MAC, receipt). The move
        renews this instance's claim, if it holds one; a final one releases it (nothing
        moves the order again), so the drive that finishes an order needs no `release`."""
        if new.final != (outcome is not None and answer is not None):
            raise ValueError("a final status, and only a final one, records its outcome")
        if (new is OrderStatus.APPROVED) != (approval is not None):
            raise ValueError("APPROVED, and only it, records the authorisation")
        mac, receipt = approval or (None, None)

        def move(tx: Tx) -> None:
            row = tx.one("SELECT status, driver, lease FROM orders WHERE order_id = ?",
                         (order_id,))
            old = OrderStatus(row[0]) if row else None
            now = time.time()
            if old is None or not legal(old, new) or self._held_elsewhere(row, now):
                raise IllegalTransition(order_id, old, new)
            statement, claim = (_RELEASE, (self.instance, self.instance)) if new.final \
                else (_RENEW, (self.instance, now + self.lease))
            tx.execute(statement, (new.value, outcome, answer, note, mac, receipt, int(now),
                                   *claim, order_id))

        await self.db.decide(move)

    def _held_elsewhere(self, row: Row | None, now: float) -> bool:
        """Another instance's claim on the order (driver, lease in row[1:3]) still holds."""
        return row is not None and row[1] is not None and row[1] != self.instance \
            and row[2] is not None and row[2] > now

    async def claim(self, order_id: bytes) -> bool:
        def claim(tx: Tx) -> bool:
            row = tx.one("SELECT status, driver, lease FROM orders WHERE order_id = ?",
                         (order_id,))
            now = time.time()
            if row is None or self._held_elsewhere(row, now):
                return False
            tx.execute("UPDATE orders SET driver = ?, lease = ? WHERE order_id = ?",
                       (self.instance, now + self.lease, order_id))
            return True

        # durable only where other instances read it (see the theory of operation)
        return await self.db.decide(claim, durable=self.db.shared)

    async def release(self, order_id: bytes) -> None:
        await self.db.decide(lambda tx: tx.execute(
            "UPDATE orders SET driver = NULL, lease = NULL WHERE order_id = ? AND driver = ?",
            (order_id, self.instance)), durable=self.db.shared)

    def approval(self, order_id: bytes) -> tuple[bytes, bytes]:
        """The authorisation MAC and the holder's receipt of an approved order."""
        row = self.db.read(lambda tx: tx.one(
            "SELECT approval, receipt FROM orders WHERE order_id = ? AND approval IS NOT NULL",
            (order_id,)))
        if row is None:
            raise KeyError(f"order {order_id.hex()} was never approved")
        return bytes(row[0]), bytes(row[1])

    _RECORD = "SELECT order_id, envelope, digest, status, since, note, outcome, answer FROM orders"

    @staticmethod
    def _record(row: Row) -> OrderRecord:
        return OrderRecord(row[0], row[1], row[2], OrderStatus(row[3]), *row[4:])

    def get(self, order_id: bytes) -> OrderRecord | None:
        row = self.db.read(lambda tx: tx.one(f"{self._RECORD} WHERE order_id = ?", (order_id,)))
        return None if row is None else self._record(row)

    def status(self, order_id: bytes) -> tuple[OrderStatus, bytes | None] | None:
        # not the whole record: the envelope is the largest thing in it
        row = self.db.read(lambda tx: tx.one(
            "SELECT status, outcome FROM orders WHERE order_id = ?", (order_id,)))
        return None if row is None else (OrderStatus(row[0]), row[1])

    def unfinished(self) -> list[OrderRecord]:
        return [self._record(row) for row in self.db.read(lambda tx: tx.all(
            f"{self._RECORD} WHERE {UNFINISHED}"))]
