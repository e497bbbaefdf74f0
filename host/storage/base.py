"""What every storage engine shares, whatever it runs on: how a store tells a retransmission
from a replay, and the two ways storage can fail under a party.

The stores' public surfaces are the Protocols beside their record types
(`host.storage.ledger.LedgerStore`, `host.storage.order_book.OrderStore`,
`host.storage.shipments.ShipmentStore`); the parties hold a store by that type only, and get it
from host.storage.engine. An engine (today host.storage.sqlite) implements each of them,
keeping every decision one transaction that commits all of it or nothing, the order id unique
in every store, and raising StorageFull or StorageLost, never its driver's own errors, for a
storage fault.
"""

from __future__ import annotations

import enum

from host.errors import TransactionError
from terminal.errors import NettxError


class Seen(enum.Enum):
    NEW = "new"
    RETRANSMISSION = "retransmission"


def replay_error(order_id: bytes) -> TransactionError:
    return TransactionError("replay", f"order {order_id.hex()} was already seen")


class StorageFull(TransactionError):
    """The disk is full: this decision was not recorded (all of it rolled back). The peer
    is told `internal` and retries; the party keeps serving and records again once there is
    space."""

    def __init__(self, message: str) -> None:
        super().__init__("internal", message)


class StorageLost(NettxError):
    """A write or an fsync failed with an I/O error: what the database holds can no longer be
    trusted to be on disk (a failed fsync may have dropped the dirty pages it was flushing, and
    a second fsync would then report success). The party must stop, not retry, and recover
    from its database and WAL on restart."""
