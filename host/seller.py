"""The seller: serves the order form, relays the holder's confirmations of the card manager and
the delivery company, opens its own part of the envelope, and drives the order: card-manager
part to the card manager, and only on a verified approval, the delivery part to the delivery
company (FIG. 1: x = holder -> seller, y = seller <-> card manager, z = seller <-> delivery).

The seller cannot read the other parts and cannot forge the answers: the authorisation is a
MAC under the card manager -> seller key over the order digest, which the seller recomputes
from its own part. An order is recorded before it is forwarded, so a seller killed midway
resumes it on restart (the card manager and the delivery company answer a retransmission with
their recorded answer, never a second debit or shipment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host import codec, envelope
from host.codec import Fields
from host.db import FINAL, OrderBook
from host.envelope import (
    Envelope,
    OpenedPart,
    authorisation_body,
    context,
    delivery_answer_body,
    delivery_request_body,
)
from host.errors import EnvelopeError, OrderError, TransactionError
from host.keymodule import KeyModule
from host.order import OrderField, OrderForm, Party
from host.server import PartyServer, ServerConfig, confirm_peer, open_own_part, request_digest
from host.wire import AsyncConnection, Message, MessageType, frame

# Answers that mean "this order is finished, it will not work": anything else (a party down,
# a timeout) leaves the order pending, to be driven again.
flow_log = logging.getLogger("nettx.flow")
ARROW = {Party.ISSUER: "y", Party.DELIVERY: "z"}  # FIG. 1; x is holder <-> seller


def flow(arrow: str, source: str, target: str, what: str) -> None:
    """One line per message, as FIG. 1 draws it; the demo replays these from the log."""
    flow_log.info("FLOW %s %s -> %s: %s", arrow, source, target, what)


FINAL_REFUSALS = {"forged", "replay", "malformed", "commitment", "wrong-party", "stale",
                  "unconfirmed", "version", "unexpected"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SellerConfig:
    form: OrderForm
    issuer: Endpoint
    delivery: Endpoint
    orders_path: Path
    retry_every: float = 2.0  # seconds between attempts to drive pending orders


class SellerServer(PartyServer):
    role = Party.SELLER.value

    def __init__(self, keys: KeyModule, config: ServerConfig, seller: SellerConfig) -> None:
        super().__init__(keys, config)
        if seller.form.seller != keys.identifier:
            raise TransactionError("wrong-party", f"the form is {seller.form.seller}'s, this "
                                                  f"key is {keys.identifier}'s")
        self.seller = seller
        self.form = seller.form
        self.orders = OrderBook(seller.orders_path)
        self._driving: set[bytes] = set()
        self._retry_task: asyncio.Task[None] | None = None
        self.handlers.update({
            MessageType.FORM_REQUEST: self.on_form_request,
            MessageType.ORDER: self.on_order,
            MessageType.STATUS: self.on_status,
        })

    async def start(self) -> int:
        port = await super().start()
        self._retry_task = asyncio.create_task(self._drive_pending())
        return port

    async def close(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
        await super().close()
        self.orders.close()

    def _endpoint(self, party: Party) -> Endpoint:
        return self.seller.issuer if party is Party.ISSUER else self.seller.delivery

    # -- the holder's side ----------------------------------------------------------------------

    async def on_form_request(self, body: Fields) -> bytes:
        flow("x", "holder", "seller", "order form request")
        flow("x", "seller", "holder", "order form: catalogue, parties, partition policy")
        return frame(MessageType.FORM, form=self.form.to_cbor())

    async def on_confirm(self, body: Fields) -> bytes:
        party = body.get("party", str, max_size=16)
        if party == self.role:
            flow("x", "holder", "seller", "confirm challenge (claim 7)")
            flow("x", "seller", "holder", "answer under seller -> holder key")
            return await super().on_confirm(body)
        try:
            target = Party(party)
        except ValueError:
            raise TransactionError("wrong-party", f"no party {party!r} here") from None
        # relay: we carry the challenge and the answer but hold neither key
        peer = body.get("peer", str, min_size=1, max_size=64)
        challenge = body.get("challenge", bytes, max_size=64)
        flow("x", "holder", "seller", f"confirm challenge for the {target} (to relay)")
        flow(ARROW[target], "seller", target.value, "relayed challenge")
        conn = await self._open(target)
        try:
            reply = await conn.request(MessageType.CONFIRM, MessageType.CONFIRMED,
                                       party=party, peer=peer, challenge=challenge)
        finally:
            await conn.close()
        flow(ARROW[target], target.value, "seller", f"answer under {target} -> holder key")
        flow("x", "seller", "holder", f"relayed {target} answer (the seller cannot forge it)")
        return frame(MessageType.CONFIRMED,
                     response=reply.body.get("response", bytes, max_size=64))

    async def on_order(self, body: Fields) -> bytes:
        env = Envelope.from_cbor(body.get("envelope", dict))
        flow("x", "holder", "seller", "envelope: header + 3 parts sealed by the card")
        opened = await self._open_seller_part(env)
        self.orders.receive(opened.header.order_id, codec.encode(env.to_cbor()),
                            opened.header.holder, opened.fields[OrderField.AMOUNT.value],
                            opened.fields)
        self.log.info("order %s from %s: %s", opened.header.order_id.hex(),
                      opened.header.holder, opened.fields[OrderField.ITEMS.value])
        self.crash_point("after-receive")
        outcome = await self._drive(env, opened)
        flow("x", "seller", "holder", f"outcome: {outcome['status']}")
        return frame(MessageType.OUTCOME, **outcome)

    async def on_status(self, body: Fields) -> bytes:
        order_id = body.get("order", bytes, min_size=16, max_size=16)
        known = self.orders.status(order_id)
        if known is None:
            raise TransactionError("unknown-order", f"no order {order_id.hex()}")
        status, outcome = known
        if outcome is not None:
            return frame(MessageType.OUTCOME, **codec.decode(outcome))
        return frame(MessageType.OUTCOME, order=order_id, status="pending",
                     reason=f"the order is {status}; the seller is still driving it")

    async def _open_seller_part(self, env: Envelope) -> OpenedPart:
        opened = await open_own_part(self.keys, Party.SELLER, env.header,
                                     env.parts[Party.SELLER], self.config.window)
        header, form = opened.header, self.form
        if (header.issuer, header.delivery, header.currency) != \
                (form.issuer, form.delivery, form.currency) \
                or header.policy_digest != form.policy.digest():
            raise EnvelopeError("wrong-form", "the order was not made on this seller's form")
        granted = {f.value for f in form.policy.fields_for(Party.SELLER)}
        if set(opened.fields) != granted:
            raise EnvelopeError("policy", "the seller part carries other fields than the "
                                          "policy grants")
        items = opened.fields[OrderField.ITEMS.value]
        claimed = opened.fields[OrderField.AMOUNT.value]
        if not isinstance(claimed, int) or isinstance(claimed, bool) \
                or not isinstance(items, list) or not items:
            raise EnvelopeError("malformed", "the seller part needs items and an amount")
        amount = 0
        for line in items:
            if not (isinstance(line, list) and len(line) == 3 and isinstance(line[0], str)
                    and isinstance(line[2], int) and not isinstance(line[2], bool)
                    and 0 < line[2] <= 1000):
                raise EnvelopeError("malformed", "an item must be [number, name, quantity]")
            try:
                amount += form.item(line[0]).unit_price * line[2]
            except OrderError as exc:
                raise EnvelopeError("unknown-item", str(exc)) from exc
        if amount != claimed:
            raise EnvelopeError("amount", f"the amount due is {amount}, not {claimed}")
        return opened

    # -- driving an order: card manager, then delivery ------------------------------------------

    async def _drive(self, env: Envelope, opened: OpenedPart) -> dict[str, Any]:
        order_id = opened.header.order_id
        if order_id in self._driving:
            return {"order": order_id, "status": "pending", "reason": "being processed"}
        self._driving.add(order_id)
        try:
            outcome = await self._authorise_and_deliver(env, opened)
        except TransactionError as exc:
            if exc.code not in FINAL_REFUSALS:
                self.log.warning("order %s pending: %s", order_id.hex(), exc)
                return {"order": order_id, "status": "pending", "reason": str(exc)}
            outcome = {"order": order_id, "status": "failed", "reason": str(exc)}
        finally:
            self._driving.discard(order_id)
        self.orders.set_status(order_id, outcome["status"], codec.encode(outcome))
        return outcome

    async def _authorise_and_deliver(self, env: Envelope, opened: OpenedPart) -> dict[str, Any]:
        header = opened.header
        order_id, amount = header.order_id, opened.fields[OrderField.AMOUNT.value]
        auth = await self._exchange(
            Party.ISSUER, MessageType.AUTHORISE, MessageType.AUTHORISATION,
            header=env.header, part=env.parts[Party.ISSUER],
            mac=await self.keys.mac(header.issuer,
                                    request_digest(env.header, env.parts[Party.ISSUER]),
                                    context("authorise", order_id)))
        code = auth.body.get("code", str, max_size=16)
        reason = auth.body.get("reason", str, max_size=500)
        mac = auth.body.get("mac", bytes, max_size=64)
        # the MAC covers what we believe: our order digest and our amount, not the issuer's
        await self.keys.check_mac(header.issuer,
                                  authorisation_body(order_id, code, reason, amount,
                                                     opened.digest),
                                  mac, context("authorisation", order_id), "authorisation")
        outcome: dict[str, Any] = {"order": order_id, "status": "declined", "reason": reason,
                                   "amount": amount,
                                   "issuer_receipt": auth.body.get("receipt", bytes,
                                                                   max_size=1024)}
        if code != "approved":
            return outcome
        self.orders.set_status(order_id, "approved")
        self.crash_point("after-approval")
        delivery = await self._exchange(
            Party.DELIVERY, MessageType.DELIVER, MessageType.DELIVERY,
            header=env.header, part=env.parts[Party.DELIVERY], approval=mac,
            mac=await self.keys.mac(header.delivery,
                                    delivery_request_body(order_id, opened.digest, mac),
                                    context("delivery-request", order_id)))
        tracking = delivery.body.get("tracking", str, max_size=64)
        await self.keys.check_mac(header.delivery,
                                  delivery_answer_body(order_id, opened.digest, tracking),
                                  delivery.body.get("mac", bytes, max_size=64),
                                  context("delivery-answer", order_id), "delivery answer")
        outcome.update(status="completed", reason="approved and shipped", tracking=tracking,
                       delivery_receipt=delivery.body.get("receipt", bytes, max_size=1024))
        return outcome

    async def _open(self, party: Party) -> AsyncConnection:
        endpoint = self._endpoint(party)
        return await AsyncConnection.open(endpoint.host, endpoint.port,
                                          timeout=self.config.read_timeout)

    async def _exchange(self, party: Party, kind: MessageType, answer: MessageType,
                        **body: Any) -> Message:
        """Confirm `party` (claim 7), then send it one request: an unconfirmed party gets
        nothing."""
        arrow = ARROW[party]
        conn = await self._open(party)
        try:
            flow(arrow, "seller", party.value, "confirm challenge (claim 7)")
            await confirm_peer(self.keys, self.form.party_id(party), party.value, conn)
            flow(arrow, party.value, "seller", "answer verified by the seller's key module")
            flow(arrow, "seller", party.value, f"{kind}: its sealed part + seller's MAC")
            reply = await conn.request(kind, answer, **body)
            flow(arrow, party.value, "seller", f"{answer}: "
                 + str(reply.body.map.get("code") or reply.body.map.get("tracking") or "?"))
            return reply
        finally:
            await conn.close()

    async def _drive_pending(self) -> None:
        """Resume orders a crash or an unreachable party left unfinished."""
        while True:
            for order_id, raw in self.orders.unfinished():
                if order_id in self._driving:
                    continue
                try:
                    env = Envelope.from_cbor(codec.decode(raw))
                    header = envelope.Header.from_bytes(env.header)
                    plaintext = await self.keys.open(
                        header.holder, env.parts[Party.SELLER],
                        envelope.part_aad(Party.SELLER, env.header),
                        context("part", header.order_id))
                    opened = envelope.parse_part(header, env.header, Party.SELLER,
                                                 env.parts[Party.SELLER], plaintext)
                    outcome = await self._drive(env, opened)
                except TransactionError as exc:
                    self.log.warning("order %s: cannot resume: %s", order_id.hex(), exc)
                    self.orders.set_status(order_id, "failed", codec.encode(
                        {"order": order_id, "status": "failed", "reason": str(exc)}))
                    continue
                if outcome["status"] in FINAL:
                    self.log.info("order %s resumed: %s", order_id.hex(), outcome["status"])
            await asyncio.sleep(self.seller.retry_every)
