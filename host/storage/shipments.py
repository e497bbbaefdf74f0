"""The delivery company's shipments: one per order, with the answer sent for it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from host.errors import EnvelopeError
from host.storage.base import (
    VIEWS_POSTGRESQL,
    Schema,
    Seen,
    Tx,
    keep_first,
    record_view,
    replay_error,
)
from host.storage.group_commit import BatchHook
from host.storage.location import Location, open_database

SHIPMENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS shipments (
    order_id    BLOB PRIMARY KEY,
    request     BLOB NOT NULL,
    seller      TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    destination TEXT NOT NULL,
    tracking    TEXT NOT NULL UNIQUE,
    at          INTEGER NOT NULL,
    answer      BLOB                  -- the delivery frame sent: every retransmission gets it
);
"""

# The same table on PostgreSQL, as versioned migration steps (host.storage.postgresql).
SHIPMENTS_POSTGRESQL = ("""
CREATE TABLE shipments (
    order_id    bytea PRIMARY KEY,
    request     bytea NOT NULL,
    seller      text NOT NULL,
    recipient   text NOT NULL,
    destination text NOT NULL,
    tracking    text NOT NULL UNIQUE,
    at          bigint NOT NULL,
    answer      bytea
);
""" + VIEWS_POSTGRESQL,)

SHIPMENTS = Schema("shipments", SHIPMENTS_SCHEMA, SHIPMENTS_POSTGRESQL,
                   {"shipments": {"answer": "BLOB"}})


@runtime_checkable
class ShipmentStore(Protocol):
    """The delivery company's store, whatever engine holds it."""

    async def ship(self, order_id: bytes, request_digest: bytes, seller: str, recipient: str,
                   destination: str, tracking: str, fields: Iterable[str],
                   stale: str | None = None) -> tuple[str, Seen, bytes | None]:
        """Record the shipment once (`tracking` is used for a new one); returns its tracking
        reference, whether it was new, and the answer already sent for it. A replay raises
        `replay`, a stale new request `stale`."""
        ...

    async def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the delivery frame before it is sent; returns the one to send. Its commit
        makes the shipment durable (`ship` does not wait for the disk: nothing may be sent
        on its strength before its answer is recorded)."""
        ...

    def close(self) -> None: ...


class Shipments:
    """The shipments on either engine (`location`: a SQLite file, or a PostgreSQL URL)."""

    def __init__(self, location: Location, *, batch_hook: BatchHook | None = None) -> None:
        self.db = open_database(location, SHIPMENTS, batch_hook=batch_hook)

    def close(self) -> None:
        self.db.close()

    async def ship(self, order_id: bytes, request_digest: bytes, seller: str, recipient: str,
                   destination: str, tracking: str, fields: Iterable[str],
                   stale: str | None = None) -> tuple[str, Seen, bytes | None]:
        """Record the shipment once; returns its tracking reference, whether it was new, and
        the answer frame already sent for it (if any)."""

        def ship(tx: Tx) -> tuple[str, Seen, bytes | None]:
            row = tx.one("SELECT request, tracking, answer FROM shipments WHERE order_id = ?",
                         (order_id,))
            if row is not None:
                if bytes(row[0]) != request_digest:
                    raise replay_error(order_id)
                return row[1], Seen.RETRANSMISSION, None if row[2] is None else bytes(row[2])
            if stale is not None:
                raise EnvelopeError("stale", stale)
            tx.execute("INSERT INTO shipments (order_id, request, seller, recipient, "
                       "destination, tracking, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (order_id, request_digest, seller, recipient, destination, tracking,
                        int(time.time())))
            record_view(tx, order_id, fields)
            return tracking, Seen.NEW, None

        # made durable by the record of its answer (`record_answer`, before it is sent)
        return await self.db.decide(ship, durable=False)

    async def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the delivery frame before it is sent; returns the frame to send (an earlier
        one, if a concurrent retransmission recorded its own first)."""
        return await self.db.decide(
            lambda tx: keep_first(tx, "shipments", "answer", order_id, answer))
