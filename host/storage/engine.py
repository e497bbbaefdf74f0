"""The one place a party gets its store: by location, on the engine that location names. A
path is a SQLite database file (host.storage.sqlite), today the only engine; a second engine
is chosen here, and the parties, which hold their store by its Protocol only, do not change."""

from __future__ import annotations

from pathlib import Path

from host.storage.ledger import Ledger, LedgerStore
from host.storage.order_book import OrderBook, OrderStore
from host.storage.shipments import Shipments, ShipmentStore


def open_ledger(location: Path) -> LedgerStore:
    """The card manager's ledger."""
    return Ledger(location)


def open_order_book(location: Path) -> OrderStore:
    """The seller's order book."""
    return OrderBook(location)


def open_shipments(location: Path) -> ShipmentStore:
    """The delivery company's shipments."""
    return Shipments(location)
