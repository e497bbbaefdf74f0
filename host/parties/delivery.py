"""The delivery company: on a request MACed by the seller, decrypts the destination from its
part and answers with a tracking reference (MACed for the seller, sealed for the holder).

It cannot check the card manager's approval itself (that MAC is for the seller): it ships on
the seller's authenticated word that the order it names was approved."""

from __future__ import annotations

import secrets
from pathlib import Path

from host.parties.durability import crash_in_batch
from host.parties.keymodule import KeyModule
from host.parties.server import PartyServer, ServerConfig, staleness
from host.protocol.envelope import context, delivery_answer_body
from host.protocol.messages import Deliver, Delivery
from host.protocol.order import Party
from host.protocol.parts import DeliveryPart
from host.protocol.wire import MessageType
from host.storage.base import Seen
from host.storage.engine import open_shipments
from host.storage.shipments import ShipmentStore


class DeliveryServer(PartyServer):
    role = Party.DELIVERY.value
    sessions = True  # the seller opens a session first (docs/protocol.md, "Sessions")

    def __init__(self, keys: KeyModule, config: ServerConfig, db_path: Path) -> None:
        super().__init__(keys, config)
        self.shipments: ShipmentStore = open_shipments(
            db_path, batch_hook=crash_in_batch(config.crash_at, self.crash_point))
        self.handlers[MessageType.DELIVER] = self.on_deliver

    async def close(self) -> None:
        await super().close()
        self.shipments.close()

    async def on_deliver(self, message: Deliver) -> bytes:
        # the seller's MAC covers the header, our part and the card manager's approval MAC
        request, opened = await self.open_request(message, "delivery-request", DeliveryPart.read,
                                                  message.approval)
        header, part = opened.header, opened.part
        tracking, seen, answer = await self.shipments.ship(
            header.order_id, request, header.seller, part.recipient, part.destination,
            "TRK-" + secrets.token_hex(6).upper(), part.names,
            stale=staleness(header, self.config.window))
        self.log.info("order %s: shipping as %s%s", header.order_id.hex(), tracking,
                      " again" if seen is Seen.RETRANSMISSION else "")
        self.crash_point("after-ship")
        if answer is not None:  # a retransmission: the very bytes sent before
            return answer
        mac = await self.keys.mac(header.seller,
                                  delivery_answer_body(header.order_id, opened.digest, tracking),
                                  context("delivery-answer", header.order_id))
        receipt = await self.receipt(header, opened.header_bytes, opened.digest,
                                     tracking=tracking)
        # recorded before it is sent: whatever reaches the seller is what it will get again
        return await self.shipments.record_answer(
            header.order_id, Delivery(tracking, mac, receipt).to_frame())
