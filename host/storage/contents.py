"""What a party has stored, read from outside the party, on either engine: the demo shows
which order fields each party decrypted and searches each store for what it must not hold."""

from __future__ import annotations

from pathlib import Path

from host.storage import sqlite
from host.storage.base import Schema
from host.storage.location import Location, is_postgresql


def read_views(location: Location, schema: Schema) -> dict[bytes, list[str]]:
    """The names of the order fields the party decrypted, per order id."""
    if is_postgresql(location):
        from host.storage import postgresql

        return postgresql.read_views(str(location), schema)
    return sqlite.read_views(Path(location))


def dump(location: Location, schema: Schema) -> str:
    """Every row of the store as text."""
    if is_postgresql(location):
        from host.storage import postgresql

        return postgresql.dump(str(location), schema)
    return sqlite.dump(Path(location))

