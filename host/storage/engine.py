"""The one place a party gets its store: by location, on the engine that location names. A
path is a SQLite database file (host.storage.sqlite); a `postgresql://` URL is a PostgreSQL
database (host.storage.postgresql) that several instances of the party may share. The
parties hold their store by its Protocol only, and do not know which engine it runs on."""

from __future__ import annotations

from host.storage.ledger import Ledger, LedgerStore
from host.storage.location import Location
from host.storage.order_book import OrderBook, OrderStore
from host.storage.shipments import Shipments, ShipmentStore


def open_ledger(location: Location) -> LedgerStore:
    """The card manager's ledger."""
    return Ledger(location)


def open_order_book(location: Location) -> OrderStore:
    """The seller's order book."""
    return OrderBook(location)


def open_shipments(location: Location) -> ShipmentStore:
    """The delivery company's shipments."""
    return Shipments(location)
