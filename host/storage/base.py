"""What every storage engine shares, whatever it runs on: how a store tells a retransmission
from a replay, the ways storage can fail under a party, and the two small interfaces the
stores are written against.

The stores' public surfaces are the Protocols beside their record types
(`host.storage.ledger.LedgerStore`, `host.storage.order_book.OrderStore`,
`host.storage.shipments.ShipmentStore`); the parties hold a store by that type only, and get it
from host.storage.engine. A store's code is written once, against `Engine` and `Tx` below, and
runs on either engine (host.storage.sqlite, host.storage.postgresql; host.storage.location
picks one from where the store lives). Every engine commits every decision all of it or
nothing, isolated from every other decision (SQLite: one writer at a time, a savepoint per
decision in a group commit; PostgreSQL: SERIALIZABLE, retried on a serialisation failure),
keeps its waits for the disk or the server off the event loop (`Engine.decide`), tells a
caller its decision only once it is committed, keeps the order id unique in every store, and
raises StorageFull, StorageUnavailable or StorageLost, never its driver's own errors, for a
storage fault.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from host.errors import ErrorCode, TransactionError
from terminal.errors import NettxError

T = TypeVar("T")
Row = tuple[Any, ...]


class Seen(enum.Enum):
    NEW = "new"
    RETRANSMISSION = "retransmission"


def replay_error(order_id: bytes) -> TransactionError:
    return TransactionError(ErrorCode.REPLAY, f"order {order_id.hex()} was already seen")


class StorageFull(TransactionError):
    """The disk is full: this decision was not recorded (all of it rolled back). The peer
    is told `internal` and retries; the party keeps serving and records again once there is
    space."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INTERNAL, message)


class StorageUnavailable(TransactionError):
    """The database server could not be reached, went away mid-transaction (a lost
    connection, an administrator's shutdown, a restart), or kept refusing this decision as
    conflicting with concurrent ones: it was not recorded, or, if the connection broke during
    COMMIT, recorded in full. The peer is told `internal` and retries; its retry finds the
    decision if it was recorded (a retransmission, answered from the record), and decides it
    if not. The party keeps serving and reconnects."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INTERNAL, message)


class StorageLost(NettxError):
    """A write or an fsync failed with an I/O error, or the database reports its data
    corrupt: what it holds can no longer be trusted to be on disk (a failed fsync may have
    dropped the dirty pages it was flushing, and a second fsync would then report success).
    The party must stop, not retry, and recover from its database and WAL on restart."""


class SchemaTooNew(NettxError):
    """The database was upgraded by a newer nettx than this one: refusing to run on it."""


@dataclass(frozen=True, slots=True)
class Schema:
    """A store's tables on each engine. `name` names the store (its PostgreSQL schema is
    nettx_NAME); `sqlite` is created if missing, with `sqlite_columns` added to a table an
    older version created without them; `postgresql` are the versioned migration steps, in
    order: step i takes the schema from version i to version i + 1."""

    name: str
    sqlite: str
    postgresql: tuple[str, ...]
    sqlite_columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class Tx(Protocol):
    """One transaction (or, from `Engine.read`, one connection reading outside any). SQL is
    written with `?` placeholders, in the dialect SQLite and PostgreSQL share."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> None: ...

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...


class Engine(Protocol):
    """Where a store's tables live."""

    #: other processes may use the store at the same time (PostgreSQL); False for a store
    #: that belongs to one process (SQLite: one party process per database file)
    shared: bool

    def run(self, body: Callable[[Tx], T]) -> T:
        """`body` in one transaction: all of it commits, or none of it. `body` may run more
        than once (an engine retries a transaction that lost a race), so it must do nothing
        but read and write through its Tx, and decide from what it reads. Blocks its
        caller: for set-up and tools, never on a party's event loop."""
        ...

    async def decide(self, body: Callable[[Tx], T], *, durable: bool = True) -> T:
        """`body` as `run` takes it, never waiting for the disk on the event loop (SQLite
        runs the body on the loop and its COMMIT on a thread; PostgreSQL all of it on a
        thread pool); returns (or raises the body's own exception) only once the
        transaction that holds it committed, so whatever the caller then sends rests on
        durable data. The engine may commit it together with
        other decisions (SQLite: host.storage.group_commit), each isolated from the others.
        `durable=False`: the store says losing this decision in a crash of the machine does
        no harm (never in a kill of the process, never torn), so its commit need not wait
        for the disk."""
        ...

    def read(self, body: Callable[[Tx], T]) -> T:
        """`body`'s reads, outside any write transaction: it sees committed data only, and
        every decision whose `decide` returned before the read began."""
        ...

    def close(self) -> None: ...


VIEWS_SQLITE = """
CREATE TABLE IF NOT EXISTS views (
    order_id BLOB PRIMARY KEY,
    fields   TEXT NOT NULL            -- JSON list of the field names this party decrypted
);
"""
VIEWS_POSTGRESQL = """
CREATE TABLE views (
    order_id bytea PRIMARY KEY,
    fields   text NOT NULL            -- JSON list of the field names this party decrypted
);
"""


def record_view(tx: Tx, order_id: bytes, fields: Iterable[str]) -> None:
    tx.execute("INSERT INTO views VALUES (?, ?) ON CONFLICT DO NOTHING",
               (order_id, json.dumps(sorted(fields))))


def keep_first(tx: Tx, table: str, column: str, order_id: bytes, answer: bytes) -> bytes:
    """Store `answer` in `column` of the order's row unless one is there already; returns the
    one stored. An answer is recorded before it is sent, and a concurrent retransmission may
    have recorded its own first: whichever is stored is the one every peer gets. `table` and
    `column` are names fixed by the stores, never input."""
    tx.execute(f"UPDATE {table} SET {column} = ? WHERE order_id = ? AND {column} IS NULL",
               (answer, order_id))
    row = tx.one(f"SELECT {column} FROM {table} WHERE order_id = ?", (order_id,))
    if row is None:
        raise KeyError(f"order {order_id.hex()} is not recorded")
    return bytes(row[0])
