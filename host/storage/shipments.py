"""The delivery company's shipments: one per order, with the answer sent for it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import ClassVar, Protocol, runtime_checkable

from host.errors import EnvelopeError
from host.storage.base import Seen, replay_error
from host.storage.sqlite import Database, keep_first, record_view

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


@runtime_checkable
class ShipmentStore(Protocol):
    """The delivery company's store, whatever engine holds it."""

    def ship(self, order_id: bytes, request_digest: bytes, seller: str, recipient: str,
             destination: str, tracking: str, fields: Iterable[str],
             stale: str | None = None) -> tuple[str, Seen, bytes | None]:
        """Record the shipment once (`tracking` is used for a new one); returns its tracking
        reference, whether it was new, and the answer already sent for it. A replay raises
        `replay`, a stale new request `stale`."""
        ...

    def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the delivery frame before it is sent; returns the one to send."""
        ...

    def close(self) -> None: ...


class Shipments(Database):
    schema = SHIPMENTS_SCHEMA
    columns: ClassVar[dict[str, dict[str, str]]] = {"shipments": {"answer": "BLOB"}}

    def ship(self, order_id: bytes, request_digest: bytes, seller: str, recipient: str,
             destination: str, tracking: str, fields: Iterable[str],
             stale: str | None = None) -> tuple[str, Seen, bytes | None]:
        """Record the shipment once; returns its tracking reference, whether it was new, and
        the answer frame already sent for it (if any)."""
        with self.transaction():
            row = self.conn.execute("SELECT request, tracking, answer FROM shipments "
                                    "WHERE order_id = ?", (order_id,)).fetchone()
            if row is not None:
                if row[0] != request_digest:
                    raise replay_error(order_id)
                return row[1], Seen.RETRANSMISSION, row[2]
            if stale is not None:
                raise EnvelopeError("stale", stale)
            self.conn.execute("INSERT INTO shipments (order_id, request, seller, recipient, "
                              "destination, tracking, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (order_id, request_digest, seller, recipient, destination,
                               tracking, int(time.time())))
            record_view(self.conn, order_id, fields)
        return tracking, Seen.NEW, None

    def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the delivery frame before it is sent; returns the frame to send (an earlier
        one, if a concurrent retransmission recorded its own first)."""
        with self.transaction():
            return keep_first(self.conn, "shipments", "answer", order_id, answer)
