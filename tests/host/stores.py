"""Looking into a store from a test, on either engine: its rows through the store's own
engine (the same `?` SQL on SQLite and PostgreSQL), whether it left a transaction open, and
a store's decision awaited from a test that runs no event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from host.storage import postgresql, sqlite

T = TypeVar("T")


def decided(decision: Coroutine[Any, Any, T]) -> T:
    """A store's decision (`await store.move(...)` in a party), run to its commit."""
    return asyncio.run(decision)


def query(store: Any, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    return store.db.read(lambda tx: tx.all(sql, params))


def execute(store: Any, sql: str, params: Sequence[object] = ()) -> None:
    store.db.run(lambda tx: tx.execute(sql, params))


def count(store: Any, table: str) -> int:
    return int(query(store, f"SELECT count(*) FROM {table}")[0][0])


def idle(store: Any) -> bool:
    """No transaction left open: SQLite's one connection is out of any, PostgreSQL's pool has
    every connection back (the pool rolls back one returned inside a transaction)."""
    db = store.db
    if isinstance(db, sqlite.Database):
        return not db.conn.in_transaction and not db.reader.in_transaction
    assert isinstance(db, postgresql.Database)
    stats = db.pool.get_stats()
    return stats.get("pool_available", 0) == stats.get("pool_size", -1)
