"""The parties' durable state in SQLite: the card manager's ledger, the seller's order book,
the delivery company's shipments; each doubles as that party's replay cache.

Every database runs in WAL mode with synchronous=FULL, and every decision is one
`BEGIN IMMEDIATE` transaction, so a party killed at any instant has either recorded an order
completely or not at all. The order id is a primary key everywhere: a second debit for the
same order is a constraint violation, not a code path.

Idempotency vs replay: a request whose order id is known *with the same request digest* is a
retransmission (a peer retrying after a crash) and gets the recorded answer again; the same
order id with anything else is a replay and is refused.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from host.errors import EnvelopeError, TransactionError
from terminal.errors import NettxError

VIEWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS views (
    order_id BLOB PRIMARY KEY,
    fields   TEXT NOT NULL            -- JSON list of the field names this party decrypted
);
"""


def connect(path: Path, schema: str,
            columns: dict[str, dict[str, str]] | None = None) -> sqlite3.Connection:
    """Open (or create) a party's database; `columns` are added to a table an older version
    of this code created without them: {table: {column: declaration}}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(schema + VIEWS_SCHEMA)
    for table, wanted in (columns or {}).items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, declaration in wanted.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
    return conn


class StorageFull(TransactionError):
    """The disk is full: this decision was not recorded (all of it rolled back). The peer
    is told `internal` and retries; the party keeps serving and records again once there is
    space."""

    def __init__(self, message: str) -> None:
        super().__init__("internal", message)


class StorageLost(NettxError):
    """A write or an fsync failed with an I/O error: what the database holds can no longer be
    trusted to be on disk (a failed fsync may have dropped the dirty pages it was flushing, and
    a second fsync would then report success). The party must stop, not retry, and recover
    from its database and WAL on restart."""


# SQLite's primary result codes (the low byte of the extended code)
SQLITE_IOERR, SQLITE_FULL = 10, 13


def storage_fault(exc: sqlite3.Error) -> TransactionError | StorageLost | None:
    """What a failed SQLite call means for the party, or None for an ordinary error."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary == SQLITE_FULL or "database or disk is full" in text:
        return StorageFull(f"storage full: {text}")
    if primary == SQLITE_IOERR or "disk I/O error" in text:
        return StorageLost(f"storage failure ({text}): data may not be durable")
    return None


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One `BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any error, a failed COMMIT included:
    SQLite says a failed COMMIT "may or may not" have rolled the transaction back, and one left
    open would be committed, unseen, by whatever this connection does next. A full disk raises
    StorageFull; an I/O error (a failed write or fsync) raises StorageLost."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    except sqlite3.Error as exc:
        fault = storage_fault(exc)
        if fault is None:
            raise
        raise fault from exc


def _rollback(conn: sqlite3.Connection) -> None:
    # "cannot rollback - no transaction is active": SQLite had rolled back already
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


class Database:
    """One party's database. After StorageLost it refuses every further transaction: the
    party is stopping, and nothing it writes now could be trusted to be durable."""

    schema: ClassVar[str] = ""
    columns: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path, self.schema, self.columns)
        self.lost: StorageLost | None = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if self.lost is not None:
            raise StorageLost(f"storage was lost earlier: {self.lost}")
        try:
            with transaction(self.conn) as conn:
                yield conn
        except StorageLost as exc:
            self.lost = exc
            raise

    def close(self) -> None:
        self.conn.close()


def record_view(conn: sqlite3.Connection, order_id: bytes, fields: Iterable[str]) -> None:
    conn.execute("INSERT OR IGNORE INTO views VALUES (?, ?)",
                 (order_id, json.dumps(sorted(fields))))


def read_views(path: Path) -> dict[bytes, list[str]]:
    conn = sqlite3.connect(path)
    try:
        return {row[0]: json.loads(row[1]) for row in conn.execute("SELECT * FROM views")}
    finally:
        conn.close()


def dump(path: Path) -> str:
    """Every row of a party's database as SQL text, the WAL included: what it has stored."""
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


class Seen(enum.Enum):
    NEW = "new"
    RETRANSMISSION = "retransmission"


def replay_error(order_id: bytes) -> TransactionError:
    return TransactionError("replay", f"order {order_id.hex()} was already seen")


# -- the card manager's ledger ------------------------------------------------------------------

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    card_number TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,        -- the card holder's identifier (its key row)
    name        TEXT NOT NULL,
    phone       TEXT NOT NULL,
    expiry      TEXT NOT NULL,        -- MM/YY
    balance     INTEGER NOT NULL CHECK (balance >= 0),
    blocked     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS authorisations (
    order_id    BLOB PRIMARY KEY,     -- one decision, one debit at most, per order
    request     BLOB NOT NULL,        -- digest of the request: retransmission vs replay
    seller      TEXT NOT NULL,
    card_number TEXT,
    amount      INTEGER NOT NULL,
    digest      BLOB NOT NULL,        -- the order digest the decision refers to
    code        TEXT NOT NULL,        -- approved | declined | reversed | voided
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    answer      BLOB,                 -- the authorisation frame sent: every retransmission
    reversal    BLOB                  -- gets these exact bytes; and the reversed frame sent
);
CREATE TABLE IF NOT EXISTS counters (
    holder TEXT NOT NULL,
    atc    INTEGER NOT NULL,          -- a card transaction counter value seen in a part
    PRIMARY KEY (holder, atc)
);
CREATE TABLE IF NOT EXISTS declines (
    holder TEXT NOT NULL,             -- a holder identifier whose request was declined
    at     INTEGER NOT NULL           -- when: the rate limit counts a rolling window
);
CREATE INDEX IF NOT EXISTS declines_by_holder ON declines (holder, at);
"""

MAX_AMOUNT = 2**53  # minor units; beyond any order, and exact in every peer's numbers

# Counters may arrive out of order (two sellers, a pending order retried after a newer one);
# a value seen twice, or far below the highest seen, is what a cloned card produces.
ATC_WINDOW = 256

# Declines per holder identifier before the card manager stops evaluating (an enumeration of
# card numbers, expiry dates or names costs one decline per guess): at most MAX_DECLINES
# evaluated declines in any DECLINE_WINDOW seconds; beyond, a request is declined unread.
MAX_DECLINES = 5
DECLINE_WINDOW = 3600
RATE_LIMITED = "too many declines for this card holder: try again later"


@dataclass(frozen=True, slots=True)
class Account:
    card_number: str
    holder: str
    name: str
    phone: str
    expiry: str
    balance: int
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    code: str  # "approved" | "declined"
    reason: str
    amount: int
    digest: bytes
    answer: bytes | None = None  # the frame already sent for this decision, if any

    @property
    def approved(self) -> bool:
        return self.code == "approved"


@dataclass(frozen=True, slots=True)
class AuthorisationRequest:
    order_id: bytes
    request_digest: bytes
    seller: str
    holder: str
    digest: bytes
    atc: int
    fields: dict[str, object]


class Ledger(Database):
    schema = LEDGER_SCHEMA
    columns: ClassVar[dict[str, dict[str, str]]] = {
        "authorisations": {"answer": "BLOB", "reversal": "BLOB"}}

    def __init__(self, path: Path, *, max_declines: int = MAX_DECLINES,
                 decline_window: int = DECLINE_WINDOW) -> None:
        super().__init__(path)
        self.max_declines, self.decline_window = max_declines, decline_window

    def add_account(self, account: Account) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(card_number) DO "
                "UPDATE SET holder=excluded.holder, name=excluded.name, phone=excluded.phone, "
                "expiry=excluded.expiry, balance=excluded.balance, blocked=excluded.blocked",
                (account.card_number, account.holder, account.name, account.phone,
                 account.expiry, account.balance, int(account.blocked)))

    def account(self, card_number: str) -> Account | None:
        row = self.conn.execute("SELECT * FROM accounts WHERE card_number = ?",
                                (card_number,)).fetchone()
        return Account(*row[:6], blocked=bool(row[6])) if row else None

    def accounts(self) -> list[Account]:
        return [Account(*row[:6], blocked=bool(row[6]))
                for row in self.conn.execute("SELECT * FROM accounts ORDER BY card_number")]

    def debits(self, order_id: bytes) -> int:
        (count,) = self.conn.execute(
            "SELECT count(*) FROM authorisations WHERE order_id = ? AND code = 'approved'",
            (order_id,)).fetchone()
        return int(count)

    def authorise(self, request: AuthorisationRequest,
                  stale: str | None = None) -> tuple[Decision, Seen]:
        """Decide and debit in one transaction. A retransmission gets the recorded decision
        at any age; a new request must be fresh (`stale` says why it is not)."""
        with self.transaction():
            row = self.conn.execute(
                "SELECT request, code, reason, amount, digest, answer FROM authorisations "
                "WHERE order_id = ?", (request.order_id,)).fetchone()
            if row is not None:
                if row[0] != request.request_digest:
                    raise replay_error(request.order_id)
                return Decision(*row[1:6]), Seen.RETRANSMISSION
            if stale is not None:
                raise EnvelopeError("stale", stale)
            now = int(time.time())
            decision, card_number = self._decide(request, now)
            if not decision.approved and decision.reason != RATE_LIMITED:
                self.conn.execute("DELETE FROM declines WHERE at <= ?",
                                  (now - self.decline_window,))
                self.conn.execute("INSERT INTO declines VALUES (?, ?)", (request.holder, now))
            if decision.approved:
                self.conn.execute("UPDATE accounts SET balance = balance - ? "
                                  "WHERE card_number = ?", (decision.amount, card_number))
            # every part the card sealed spent a counter value, approved or not
            self.conn.execute("INSERT OR IGNORE INTO counters VALUES (?, ?)",
                              (request.holder, request.atc))
            self.conn.execute(
                "INSERT INTO authorisations (order_id, request, seller, card_number, amount, "
                "digest, code, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request.order_id, request.request_digest, request.seller, card_number,
                 decision.amount, decision.digest, decision.code, decision.reason, now))
            record_view(self.conn, request.order_id, request.fields)
        return decision, Seen.NEW

    def reverse(self, order_id: bytes, seller: str, digest: bytes) -> Decision:
        """Undo an approval the seller could not complete (or void an order it never will):
        credit the debit back once; an order never seen is voided, so a late authorisation
        request for it is refused as a replay."""
        with self.transaction():
            row = self.conn.execute(
                "SELECT seller, card_number, amount, digest, code, reversal FROM authorisations "
                "WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO authorisations (order_id, request, seller, card_number, "
                    "amount, digest, code, reason, at) "
                    "VALUES (?, x'', ?, NULL, 0, ?, 'voided', ?, ?)",
                    (order_id, seller, digest, "voided before any authorisation",
                     int(time.time())))
                return Decision("voided", "voided before any authorisation", 0, digest)
            if row[0] != seller or row[3] != digest:
                raise replay_error(order_id)
            if row[5] is not None:  # reversed (or voided) before: the same answer again
                return Decision(row[4], "no charge stands",
                                row[2] if row[4] == "reversed" else 0, digest, row[5])
            code, amount = row[4], row[2]
            if code == "approved":
                self.conn.execute("UPDATE accounts SET balance = balance + ? "
                                  "WHERE card_number = ?", (amount, row[1]))
                self.conn.execute("UPDATE authorisations SET code = 'reversed', reason = ? "
                                  "WHERE order_id = ?", ("reversed by the seller", order_id))
                code = "reversed"
            # declined, reversed, voided: nothing is charged, and stays so
            return Decision(code, "no charge stands", amount if code == "reversed" else 0,
                            digest)

    def declines(self, holder: str, now: int | None = None) -> int:
        """Evaluated declines for `holder` in the current window."""
        now = int(time.time()) if now is None else now
        (count,) = self.conn.execute(
            "SELECT count(*) FROM declines WHERE holder = ? AND at > ?",
            (holder, now - self.decline_window)).fetchone()
        return int(count)

    def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the authorisation frame before it is sent; returns the frame to send, which
        is an earlier one if a concurrent retransmission recorded its own first."""
        return self._record(order_id, "answer", answer)

    def record_reversal(self, order_id: bytes, answer: bytes) -> bytes:
        """The same for the reversed frame."""
        return self._record(order_id, "reversal", answer)

    def _record(self, order_id: bytes, column: str, answer: bytes) -> bytes:
        # `column` is one of two names fixed above, never input
        with self.transaction():
            self.conn.execute(f"UPDATE authorisations SET {column} = ? "
                              f"WHERE order_id = ? AND {column} IS NULL", (answer, order_id))
            (stored,) = self.conn.execute(f"SELECT {column} FROM authorisations "
                                          f"WHERE order_id = ?", (order_id,)).fetchone()
        return bytes(stored)

    def _decide(self, request: AuthorisationRequest,
                now: int) -> tuple[Decision, str | None]:
        f = request.fields
        amount = f.get("amount")
        card_number = f.get("card_number")
        if not isinstance(amount, int) or isinstance(amount, bool) \
                or not 0 < amount <= MAX_AMOUNT or not isinstance(card_number, str):
            return Decision("declined", "the order lacks a valid amount or card number",
                            0, request.digest), None

        def decline(reason: str) -> tuple[Decision, str | None]:
            return Decision("declined", reason, amount, request.digest), card_number

        if self.declines(request.holder, now) >= self.max_declines:
            # not evaluated: the answer says nothing about this card number
            return Decision("declined", RATE_LIMITED, amount, request.digest), None
        account = self.account(card_number)
        if account is None:
            return decline("unknown card number")
        # the holder is authenticated twice: by its card (only it could seal this part) and
        # against the account it claims (card number bound to its identifier, expiry, name)
        if account.holder != request.holder:
            return decline("the card number does not belong to this card holder")
        if f.get("card_expiry") != account.expiry:
            return decline("wrong expiry date")
        if f.get("holder_name") != account.name:
            return decline("the name does not match the account")
        if account.phone and f.get("holder_phone") != account.phone:
            return decline("the phone number does not match the account")
        if account.blocked:
            return decline("the card is blocked")
        seen, highest = self.conn.execute(
            "SELECT count(*) FILTER (WHERE atc = ?), max(atc) FROM counters WHERE holder = ?",
            (request.atc, request.holder)).fetchone()
        if seen:
            return decline(f"card transaction counter {request.atc} seen before: "
                           f"a cloned card")
        if highest is not None and request.atc + ATC_WINDOW <= highest:
            return decline(f"card transaction counter {request.atc} far below {highest}: "
                           f"a cloned card")
        if account.balance < amount:
            return decline("insufficient funds")
        return Decision("approved", "approved", amount, request.digest), card_number


# -- the seller's order book --------------------------------------------------------------------

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
    at       INTEGER NOT NULL         -- last change
);
"""


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


class OrderBook(Database):
    schema = ORDERS_SCHEMA
    columns: ClassVar[dict[str, dict[str, str]]] = {"orders": {"answer": "BLOB"}}

    def receive(self, order_id: bytes, envelope: bytes, holder: str, amount: int,
                digest: bytes, fields: Iterable[str]) -> None:
        now = int(time.time())
        with self.transaction():
            try:
                self.conn.execute(
                    "INSERT INTO orders (order_id, envelope, holder, amount, digest, status, "
                    "since, at) VALUES (?, ?, ?, ?, ?, 'received', ?, ?)",
                    (order_id, envelope, holder, amount, digest, now, now))
            except sqlite3.IntegrityError:
                raise replay_error(order_id) from None
            record_view(self.conn, order_id, fields)

    def move(self, order_id: bytes, new: OrderStatus, *, outcome: bytes | None = None,
             answer: bytes | None = None, note: str | None = None,
             approval: tuple[bytes, bytes] | None = None) -> None:
        """Move the order to `new`, re-reading its status inside the transaction: a move the
        table forbids raises IllegalTransition and writes nothing. A final status carries the
        outcome and the answer frame; APPROVED carries (authorisation MAC, receipt)."""
        if new.final != (outcome is not None and answer is not None):
            raise ValueError("a final status, and only a final one, records its outcome")
        if (new is OrderStatus.APPROVED) != (approval is not None):
            raise ValueError("APPROVED, and only it, records the authorisation")
        with self.transaction():
            row = self.conn.execute("SELECT status FROM orders WHERE order_id = ?",
                                    (order_id,)).fetchone()
            old = OrderStatus(row[0]) if row else None
            if old is None or not legal(old, new):
                raise IllegalTransition(order_id, old, new)
            mac, receipt = approval or (None, None)
            self.conn.execute(
                "UPDATE orders SET status = ?, outcome = coalesce(?, outcome), "
                "answer = coalesce(?, answer), note = coalesce(?, note), "
                "approval = coalesce(?, approval), receipt = coalesce(?, receipt), at = ? "
                "WHERE order_id = ?",
                (new.value, outcome, answer, note, mac, receipt, int(time.time()), order_id))

    def approval(self, order_id: bytes) -> tuple[bytes, bytes]:
        """The authorisation MAC and the holder's receipt of an approved order."""
        row = self.conn.execute("SELECT approval, receipt FROM orders WHERE order_id = ? "
                                "AND approval IS NOT NULL", (order_id,)).fetchone()
        if row is None:
            raise KeyError(f"order {order_id.hex()} was never approved")
        return row[0], row[1]

    _RECORD = "SELECT order_id, envelope, digest, status, since, note, outcome, answer FROM orders"

    @staticmethod
    def _record(row: tuple) -> OrderRecord:
        return OrderRecord(row[0], row[1], row[2], OrderStatus(row[3]), *row[4:])

    def get(self, order_id: bytes) -> OrderRecord | None:
        row = self.conn.execute(f"{self._RECORD} WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else self._record(row)

    def status(self, order_id: bytes) -> tuple[OrderStatus, bytes | None] | None:
        record = self.get(order_id)
        return (record.status, record.outcome) if record else None

    def unfinished(self) -> list[OrderRecord]:
        return [self._record(row) for row in self.conn.execute(
            f"{self._RECORD} WHERE status IN ('received', 'authorising', 'approved', 'voiding')")]


# -- the delivery company's shipments -----------------------------------------------------------

SHIPMENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS shipments (
    order_id    BLOB PRIMARY KEY,
    request     BLOB NOT NULL,
    seller      TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    destination TEXT NOT NULL,
    tracking    TEXT NOT NULL UNIQUE,
    at          INTEGER NOT NULL,
    answer      BLOB                  -- the delivery frame sent: every retransmission gets it
);
"""


class Shipments(Database):
    schema = SHIPMENTS_SCHEMA
    columns: ClassVar[dict[str, dict[str, str]]] = {"shipments": {"answer": "BLOB"}}

    def ship(self, order_id: bytes, request_digest: bytes, seller: str, recipient: str,
             destination: str, tracking: str, fields: Iterable[str],
             stale: str | None = None) -> tuple[str, Seen, bytes | None]:
        """Record the shipment once; returns its tracking reference, whether it was new, and
        the answer frame already sent for it (if any)."""
        with self.transaction():
            row = self.conn.execute("SELECT request, tracking, answer FROM shipments "
                                    "WHERE order_id = ?", (order_id,)).fetchone()
            if row is not None:
                if row[0] != request_digest:
                    raise replay_error(order_id)
                return row[1], Seen.RETRANSMISSION, row[2]
            if stale is not None:
                raise EnvelopeError("stale", stale)
            self.conn.execute("INSERT INTO shipments (order_id, request, seller, recipient, "
                              "destination, tracking, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (order_id, request_digest, seller, recipient, destination,
                               tracking, int(time.time())))
            record_view(self.conn, order_id, fields)
        return tracking, Seen.NEW, None

    def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the delivery frame before it is sent; returns the frame to send (an earlier
        one, if a concurrent retransmission recorded its own first)."""
        with self.transaction():
            self.conn.execute("UPDATE shipments SET answer = ? WHERE order_id = ? "
                              "AND answer IS NULL", (answer, order_id))
            (stored,) = self.conn.execute("SELECT answer FROM shipments WHERE order_id = ?",
                                          (order_id,)).fetchone()
        return bytes(stored)
