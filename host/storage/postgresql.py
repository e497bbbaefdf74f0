"""The PostgreSQL engine: a store in a PostgreSQL database that several instances of a party
(processes, machines) share. The same stores run on it as on SQLite (host.storage.base says
what every engine promises); this module is how PostgreSQL keeps those promises.

Isolation: SERIALIZABLE, retried
--------------------------------
Every decision is one transaction at SERIALIZABLE isolation, retried from the start (bounded)
when PostgreSQL refuses it with a serialisation failure (40001) or a deadlock (40P01). The
alternative, READ COMMITTED with `SELECT ... FOR UPDATE` on the account row and the order
row, was rejected: the card manager's rules read more than those two rows (the holder's
counter history, its recent declines, the absence of a row for a new order id) and a lock
list would have to follow every rule the card manager adds, or a holder's two requests for
different accounts (or for none) would slip past each other. Under SERIALIZABLE the database
itself guarantees that concurrent decisions have the effect of some serial order, whatever
they read, so two instances can never both read a balance, or both find an order id new,
before either writes. A retry is cheap and safe: a transaction's body only reads and writes
through its connection and the rules are a pure function of what it read. Two instances
racing on the same order: one commits, the other is refused, retries, and finds the order
recorded (a retransmission, answered from the record).

The primary keys (the order id in every store), `CHECK (balance >= 0)` and the status and
code checks are the database's own, a second line behind the code.

Off the event loop, one decision per transaction
------------------------------------------------
A party's decisions (`decide`) run on a small thread pool of their own, POOL_SIZE threads
each holding a pooled connection while its transaction runs, so several decisions are in
flight at once and the party's event loop never waits on the server. Their COMMITs overlap
on the server, and PostgreSQL's own group commit lets one WAL flush cover every commit
waiting for it. Decisions are not batched into one transaction here, as the SQLite engine
does: under SERIALIZABLE one decision's serialisation failure aborts the whole transaction,
so a batch would retry every decision in it, and a batch holds its predicate locks longer,
making conflicts with other instances likelier. One more pooled connection serves the
party's reads, which stay on its event loop.

Faults
------
- a lost connection, an administrator's or a crash shutdown (SQLSTATE classes 08 and 57P),
  no connection free within POOL_WAIT, or a decision still conflicting after ATTEMPTS tries:
  StorageUnavailable, told to the peer as `internal`. Nothing was recorded, or, for a
  connection lost during COMMIT, all of it: the peer's retry is decided anew or answered
  from the record, never applied twice. The pool checks a connection before handing it out,
  so the party reconnects by itself once the server is back.
- insufficient resources (class 53: disk full, out of memory, too many connections):
  StorageFull, the same `internal`, retry.
- an I/O error reported by the server (class 58) or data or an index found corrupt (class
  XX): StorageLost, the party stops. The server is the one that fsyncs, and PostgreSQL
  itself panics and recovers from its WAL rather than retry a failed fsync; what reaches a
  client as an I/O or corruption error means the stored data cannot be trusted, as with
  SQLite's I/O error.

Schema
------
Each store lives in its own PostgreSQL schema (nettx_ledger, nettx_orders, nettx_shipments),
so one database may hold several parties' stores, with a `schema_version` table. On start the
party applies the migration steps it knows beyond that version, in one transaction, under a
transaction-scoped advisory lock (two instances starting together: one migrates, the other
waits and finds it done), and refuses, with one line, a schema newer than it knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg import errors, sql
from psycopg_pool import ConnectionPool, PoolTimeout

from host.errors import TransactionError
from host.storage.base import (
    Row,
    Schema,
    SchemaTooNew,
    StorageFull,
    StorageLost,
    StorageUnavailable,
    Tx,
)

T = TypeVar("T")

ATTEMPTS = 30  # tries of one decision that keeps losing races, before `internal`
POOL_WAIT = 5.0  # seconds to wait for a connection (the server may be restarting)
POOL_SIZE = 4  # decisions in flight per store per process (and one connection more: reads)
RETRY_FAULTS = (errors.SerializationFailure, errors.DeadlockDetected)


@functools.lru_cache(maxsize=256)
def dialect(statement: str) -> str:
    """The stores' `?` placeholders as psycopg's `%s` (their SQL has no other `?` or `%`)."""
    return statement.replace("?", "%s")


class PgTx:
    """The stores' Tx on one psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, statement: str, params: Sequence[object] = ()) -> None:
        self.conn.execute(dialect(statement), params)

    def one(self, statement: str, params: Sequence[object] = ()) -> Row | None:
        return self.conn.execute(dialect(statement), params).fetchone()

    def all(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        return self.conn.execute(dialect(statement), params).fetchall()


def storage_fault(exc: psycopg.Error) -> TransactionError | StorageLost | None:
    """What a failed PostgreSQL call means for the party, or None for an ordinary error."""
    state = exc.sqlstate or ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state.startswith("53"):
        return StorageFull(f"database out of resources: {text}")
    if state.startswith(("58", "XX")):
        return StorageLost(f"database failure ({text}): data may not be durable")
    lost_connection = isinstance(exc, psycopg.OperationalError) and not state
    if state.startswith(("08", "57P")) or lost_connection \
            or isinstance(exc, psycopg.InterfaceError):
        return StorageUnavailable(f"database unavailable: {text}")
    return None


def namespace(schema: Schema) -> str:
    return f"nettx_{schema.name}"


class Database:
    """One store's tables in a PostgreSQL database, through a small connection pool."""

    shared = True  # any number of instances of the party

    def __init__(self, url: str, schema: Schema, *, pool_size: int = POOL_SIZE,
                 attempts: int = ATTEMPTS, wait: float = POOL_WAIT) -> None:
        self.url, self.schema, self.attempts, self.wait = url, schema, attempts, wait
        self.lost: StorageLost | None = None
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            # not echoed: the string may hold a password
            raise StorageUnavailable("not a valid PostgreSQL URL (postgresql://USER@HOST:PORT/"
                                     "DATABASE)") from None
        self.pool = ConnectionPool(
            url, min_size=1, max_size=pool_size + 1, open=False, timeout=wait,
            name=f"nettx-{schema.name}", check=ConnectionPool.check_connection,
            kwargs={"autocommit": True,
                    "options": f"-c search_path={namespace(schema)}"},
            configure=_configure)
        try:
            self.pool.open(wait=True, timeout=wait)
        except PoolTimeout as exc:
            self.pool.close()
            raise StorageUnavailable(f"cannot connect to the {schema.name} database "
                                     f"{_redacted(url)}") from exc
        try:
            self._migrate()
        except BaseException:
            self.pool.close()
            raise
        self.deciding = ThreadPoolExecutor(max_workers=pool_size,
                                           thread_name_prefix=f"nettx-{schema.name}")

    def _migrate(self) -> None:
        steps = self.schema.postgresql
        name = namespace(self.schema)

        def migrate(tx: PgTx) -> None:
            conn = tx.conn
            conn.execute("SELECT pg_advisory_xact_lock(%s)",
                         (zlib.crc32(name.encode()) - 2**31,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(name)))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            have = 0 if row is None else int(row[0])
            if have > len(steps):
                raise SchemaTooNew(f"the {self.schema.name} schema in this database is "
                                   f"version {have}; this nettx knows up to {len(steps)}: "
                                   f"upgrade nettx")
            for step in steps[have:]:
                conn.execute(step)
            if row is None:
                conn.execute("INSERT INTO schema_version VALUES (%s)", (len(steps),))
            elif have < len(steps):
                conn.execute("UPDATE schema_version SET version = %s", (len(steps),))

        # READ COMMITTED under the lock: a second instance waits on it, then reads the
        # version the first one committed
        self._attempt(migrate, serializable=False)

    @property
    def version(self) -> int:
        row = self.read(lambda tx: tx.one("SELECT version FROM schema_version"))
        return 0 if row is None else int(row[0])

    def run(self, body: Callable[[Tx], T]) -> T:
        if self.lost is not None:
            raise StorageLost(f"storage was lost earlier: {self.lost}")
        for attempt in range(self.attempts):
            try:
                return self._attempt(body, serializable=True)
            except RETRY_FAULTS:
                # lost a race with a concurrent decision: back off a little, at random, so
                # the same two do not collide again, and decide again from fresh reads
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))
        raise StorageUnavailable(f"the {self.schema.name} database kept refusing this "
                                 f"decision as conflicting ({self.attempts} attempts)")

    async def decide(self, body: Callable[[Tx], T], *, durable: bool = True) -> T:
        # every commit here waits for the server's WAL flush (`durable` is SQLite's to use)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.deciding, self.run, body)

    def _attempt(self, body: Callable[[PgTx], T], *, serializable: bool) -> T:
        with self._faults(keep_lost=True), self.pool.connection(timeout=self.wait) as conn, \
                conn.transaction():
            if serializable:
                conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            return body(PgTx(conn))

    def read(self, body: Callable[[Tx], T]) -> T:
        with self._faults(keep_lost=False), self.pool.connection(timeout=self.wait) as conn:
            return body(PgTx(conn))

    @contextlib.contextmanager
    def _faults(self, *, keep_lost: bool) -> Iterator[None]:
        """The driver's errors as storage faults (a serialisation failure or a deadlock
        passes through as it is: `run` retries it); a transaction's StorageLost is kept, so
        every later decision is refused."""
        try:
            yield
        except PoolTimeout as exc:
            raise StorageUnavailable(f"no connection to the {self.schema.name} database "
                                     f"within {self.wait:g} s") from exc
        except psycopg.Error as exc:
            fault = storage_fault(exc)  # None for RETRY_FAULTS and every ordinary error
            if fault is None:
                raise
            if keep_lost and isinstance(fault, StorageLost):
                self.lost = fault
            raise fault from exc

    def close(self) -> None:
        self.deciding.shutdown(wait=True)
        self.pool.close()


def _configure(conn: psycopg.Connection[Any]) -> None:
    # the stores' SQL is plain enough to run on either engine: no session state beyond the
    # search path (set at connect) is needed
    conn.prepare_threshold = 2


def _redacted(url: str) -> str:
    """The URL without a password, for an error message."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable URL)"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items() if k != "options")


# -- looking inside (the demo shows what each party stored) ------------------------------------


def _inspect(url: str, schema: Schema, body: Callable[[psycopg.Connection[Any]], T]) -> T:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=int(POOL_WAIT),
                             options=f"-c search_path={namespace(schema)}") as conn:
            return body(conn)
    except psycopg.Error as exc:
        raise storage_fault(exc) or StorageUnavailable(
            f"the {schema.name} database {_redacted(url)}: {exc}") from exc


def read_views(url: str, schema: Schema) -> dict[bytes, list[str]]:
    """The fields this store's party decrypted, per order (the views table)."""
    return _inspect(url, schema, lambda conn: {
        bytes(row[0]): json.loads(row[1])
        for row in conn.execute("SELECT order_id, fields FROM views").fetchall()})


def dump(url: str, schema: Schema) -> str:
    """Every row of every table of this store, as text: what the party has stored."""

    def rows(conn: psycopg.Connection[Any]) -> str:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "ORDER BY table_name", (namespace(schema),)).fetchall()]
        lines = []
        for table in tables:
            query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))
            lines += [f"{table}: {row!r}" for row in conn.execute(query).fetchall()]
        return "\n".join(lines)

    return _inspect(url, schema, rows)


def drop_stores(url: str, schemas: Sequence[Schema]) -> None:
    """Drop these stores' PostgreSQL schemas, tables and rows: a demo's fresh start."""

    def drop(conn: psycopg.Connection[Any]) -> None:
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(namespace(schema))))

    _inspect(url, schemas[0], drop)
