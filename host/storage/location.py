"""Where a store lives, and the engine that location names: a `postgresql://` (or
`postgres://`) URL is a PostgreSQL database (host.storage.postgresql, imported only then, so
a party on SQLite never loads the PostgreSQL driver); anything else is a SQLite file.

`batch_hook` (tests) is called inside each group commit (host.storage.group_commit); only
SQLite batches decisions, so PostgreSQL has no such points."""

from __future__ import annotations

from pathlib import Path

from host.storage.base import Engine, Schema
from host.storage.group_commit import BatchHook
from host.storage.sqlite import Database as SqliteDatabase

Location = Path | str
URL_SCHEMES = ("postgresql://", "postgres://")


def is_postgresql(location: Location) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def open_database(location: Location, schema: Schema, *,
                  batch_hook: BatchHook | None = None) -> Engine:
    if is_postgresql(location):
        from host.storage.postgresql import Database as PostgresDatabase

        return PostgresDatabase(str(location), schema)
    return SqliteDatabase(Path(location), schema, batch_hook=batch_hook)
