"""The one place a party gets its store: by location, on the engine that location names. A
path is a SQLite database file (host.storage.sqlite); a `postgresql://` URL is a PostgreSQL
database (host.storage.postgresql) that several instances of the party may share. The
parties hold their store by its Protocol only, and do not know which engine it runs on.
`batch_hook`: tests' crash points inside a group commit (host.storage.group_commit)."""

from __future__ import annotations

from host.storage.group_commit import BatchHook
from host.storage.ledger import Ledger, LedgerStore
from host.storage.location import Location
from host.storage.order_book import OrderBook, OrderStore
from host.storage.shipments import Shipments, ShipmentStore


def open_ledger(location: Location, *, batch_hook: BatchHook | None = None) -> LedgerStore:
    """The card manager's ledger."""
    return Ledger(location, batch_hook=batch_hook)


def open_order_book(location: Location, *, batch_hook: BatchHook | None = None) -> OrderStore:
    """The seller's order book."""
    return OrderBook(location, batch_hook=batch_hook)


def open_shipments(location: Location, *, batch_hook: BatchHook | None = None) -> ShipmentStore:
    """The delivery company's shipments."""
    return Shipments(location, batch_hook=batch_hook)
