"""The SQLite engine: a store in one database file, embedded in the party's process. The
stores built on it are host.storage.ledger (the card manager), host.storage.order_book (the
seller) and host.storage.shipments (the delivery company), each doubling as that party's replay
cache (host.storage.base says what an engine promises).

Every database runs in WAL mode with synchronous=FULL. Its decisions are group-committed
(host.storage.group_commit): the decisions queued together run one after another, each
inside a savepoint, in one `BEGIN IMMEDIATE` transaction whose COMMIT runs on a thread of
the database's own (the event loop never waits for an fsync), so a party killed at any
instant has either recorded a decision completely or not at all, two decisions never
interleave (one writer at a time), and one fsync covers the batch. Reads use a second
connection, which sees only what was committed. The order id is a primary key everywhere: a
second debit for the same order is a constraint violation, not a code path.

Idempotency vs replay: a request whose order id is known *with the same request digest* is a
retransmission (a peer retrying after a crash) and gets the recorded answer again; the same
order id with anything else is a replay and is refused.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from host.errors import TransactionError
from host.storage.base import (
    VIEWS_SQLITE,
    Row,
    Schema,
    StorageFull,
    StorageLost,
    Tx,
)
from host.storage.group_commit import BatchHook, GroupCommitter

__all__ = ["Database", "StorageFull", "StorageLost", "dump", "read_views"]

T = TypeVar("T")


def connect(path: Path, schema: str,
            columns: Mapping[str, Mapping[str, str]] | None = None) -> sqlite3.Connection:
    """Open (or create) a party's database; `columns` are added to a table an older version
    of this code created without them: {table: {column: declaration}}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(schema + VIEWS_SQLITE)
    for table, wanted in (columns or {}).items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, declaration in wanted.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A second connection to a party's database, for reads only: in WAL mode it reads the
    last committed state while the writer's transaction runs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA query_only=ON")
    return conn


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


class SqliteTx:
    """The stores' Tx on one sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self.conn.execute(sql, params)

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return [tuple(row) for row in self.conn.execute(sql, params)]


class Database:
    """One party's SQLite database. After StorageLost it refuses every further transaction:
    the party is stopping, and nothing it writes now could be trusted to be durable."""

    shared = False  # one party process per file

    def __init__(self, path: Path, schema: Schema, *, batch_hook: BatchHook | None = None
                 ) -> None:
        self.path = path
        self.conn = connect(path, schema.sqlite, schema.sqlite_columns)  # the committer's
        self.reader = connect_reader(path)
        self._reading = threading.Lock()  # the reader connection, one body at a time
        self._full = True  # the write connection's synchronous mode is FULL
        # the connection the open batch began on: its COMMIT or ROLLBACK goes there, even if
        # `conn` was swapped meanwhile (the storage-fault tests wrap it while a batch is open)
        self._open = self.conn
        self.lost: StorageLost | None = None
        self.committer = GroupCommitter(self, name=path.name, hook=batch_hook)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        # durable, even after a batch of undurable decisions left the connection otherwise
        self._prepare(durable=True)
        try:
            with transaction(self.conn) as conn:
                yield conn
        except StorageLost as exc:
            self.lost = exc
            raise

    # -- the committer's side (host.storage.group_commit.Journal) ---------------------------

    def begin(self, durable: bool) -> Tx:
        """One group commit's transaction. Not durable: in WAL mode with synchronous=NORMAL
        the COMMIT is written to the log but not fsynced; the next durable COMMIT's fsync
        covers it, and a kill of the process loses nothing (the kernel holds it). The mode
        is switched only when a batch needs the other one."""
        self._prepare(durable)
        self._open = self.conn
        self._open.execute("BEGIN IMMEDIATE")
        return SqliteTx(self._open)

    def _prepare(self, durable: bool) -> None:
        """Before a write transaction: refused once storage was lost; the connection's
        synchronous mode switched to what the transaction needs, if it is not so already."""
        if self.lost is not None:
            raise StorageLost(f"storage was lost earlier: {self.lost}")
        if durable != self._full:
            self.conn.execute("PRAGMA synchronous=FULL" if durable
                              else "PRAGMA synchronous=NORMAL")
            self._full = durable

    def commit(self) -> None:
        self._open.execute("COMMIT")

    def abort(self, error: BaseException) -> BaseException:
        """Roll back whatever is open, a failed COMMIT's transaction included: SQLite says a
        failed COMMIT "may or may not" have rolled it back, and one left open would be
        committed, unseen, by the next batch. A full disk becomes StorageFull; an I/O error
        (a failed write or fsync) StorageLost, and every later transaction is refused."""
        _rollback(self._open)
        if isinstance(error, sqlite3.Error):
            fault = storage_fault(error)
            if fault is not None:
                fault.__cause__ = error
                error = fault
        if isinstance(error, StorageLost):
            self.lost = error
        return error

    def is_fault(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.Error) and storage_fault(error) is not None

    # -- the engine -------------------------------------------------------------------------

    def run(self, body: Callable[[Tx], T]) -> T:
        # BEGIN IMMEDIATE takes the write lock first: nothing to race, so nothing to retry
        return self.committer.submit(body).result()

    async def decide(self, body: Callable[[Tx], T], *, durable: bool = True) -> T:
        return await self.committer.decide(body, durable=durable)

    def read(self, body: Callable[[Tx], T]) -> T:
        # one read transaction: the body sees one committed state, and the next read a
        # newer one (a statement left open would pin this connection to an old snapshot)
        with self._reading:
            self.reader.execute("BEGIN")
            try:
                return body(SqliteTx(self.reader))
            finally:
                if self.reader.in_transaction:
                    self.reader.execute("ROLLBACK")

    def close(self) -> None:
        self.committer.close()
        self.conn.close()
        self.reader.close()


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
