"""Looking into a store from a test, on either engine: its rows through the store's own
engine (the same `?` SQL on SQLite and PostgreSQL), and whether it left a transaction open."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from host.storage import postgresql, sqlite


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
        return not db.conn.in_transaction
    assert isinstance(db, postgresql.Database)
    stats = db.pool.get_stats()
    return stats.get("pool_available", 0) == stats.get("pool_size", -1)
