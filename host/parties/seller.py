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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.errors import EnvelopeError, OrderError, TransactionError
from host.parties.connection import AsyncConnection
from host.parties.keymodule import KeyModule
from host.parties.lifecycle import (
    Answered,
    Authorise,
    Authorised,
    Cancelled,
    Event,
    Finish,
    Refused,
    Sent,
    Shipped,
    Void,
    advance,
    next_step,
)
from host.parties.server import (
    PartyServer,
    ServerConfig,
    confirm_peer,
    open_own_part,
    request_digest,
)
from host.protocol import codec, envelope
from host.protocol.codec import Fields
from host.protocol.envelope import (
    Envelope,
    OpenedPart,
    authorisation_body,
    context,
    delivery_answer_body,
    reverse_body,
    reversed_body,
)
from host.protocol.order import OrderField, OrderForm, Party, check_role
from host.protocol.wire import Message, MessageType, frame
from host.storage.base import StorageLost
from host.storage.engine import open_order_book
from host.storage.order_book import OrderRecord, OrderStatus, OrderStore

flow_log = logging.getLogger("nettx.flow")
ARROW = {Party.ISSUER: "y", Party.DELIVERY: "z"}  # FIG. 1; x is holder <-> seller


def flow(arrow: str, source: str, target: str, what: str) -> None:
    """One line per message, as FIG. 1 draws it; the demo replays these from the log."""
    flow_log.info("FLOW %s %s -> %s: %s", arrow, source, target, what)


# Failures that are not worth retrying: the order will not complete. Anything else (a party
# down, a timeout, an internal error over there) leaves it pending, to be driven again.
# `error` frames are not authenticated, so a refusal received after the authorisation request
# went out may be a lie covering a real debit: such an order is voided, never just dropped.
FINAL_REFUSALS = {"forged", "replay", "malformed", "commitment", "wrong-party", "stale",
                  "unconfirmed", "version", "unexpected", "amount"}

Outcome = dict[str, Any]  # the `outcome` message's fields


class Unfinishable(TransactionError):
    """The order cannot complete; the card manager must cancel any charge for it."""


@dataclass(slots=True)
class _Order:
    """An order being driven: what its record holds, and its seller part once opened."""

    order_id: bytes
    env: Envelope
    header: envelope.Header
    digest: bytes
    opened: OpenedPart | None


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
    give_up_after: float = 600.0  # an order not completed by then is voided


class SellerServer(PartyServer):
    role = Party.SELLER.value

    def __init__(self, keys: KeyModule, config: ServerConfig, seller: SellerConfig) -> None:
        super().__init__(keys, config)
        if seller.form.seller != keys.identifier:
            raise TransactionError("wrong-party", f"the form is {seller.form.seller}'s, this "
                                                  f"key is {keys.identifier}'s")
        self.seller = seller
        self.form = seller.form
        self._form_bytes = codec.encode(seller.form.to_cbor())  # the bytes its MACs cover
        self.orders: OrderStore = open_order_book(seller.orders_path)
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
        """The form as bytes, MACed for the asking holder under the seller -> holder key over
        its nonce and those bytes: the holder's card checks it, so nothing on the way can
        swap the delivery company, the card manager or a price."""
        holder = body.get("holder", str, min_size=1, max_size=64)
        nonce = body.get("nonce", bytes, min_size=envelope.FORM_NONCE_SIZE,
                         max_size=envelope.FORM_NONCE_SIZE)
        try:
            check_role(holder, "holder")
        except ValueError as exc:
            raise TransactionError("malformed", str(exc)) from exc
        flow("x", "holder", "seller", "order form request (holder id, nonce)")
        mac = await self.keys.mac(holder, envelope.form_body(self.identifier, holder, nonce,
                                                             self._form_bytes),
                                  context("form", nonce))
        flow("x", "seller", "holder", "order form: catalogue, parties, partition policy; "
                                      "MAC seller -> holder")
        return frame(MessageType.FORM, form=self._form_bytes, mac=mac)

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
        except TransactionError as exc:
            if exc.code in ("connection-lost", "timeout", "truncated"):
                # the upstream party failed, not the holder's connection: say so to the holder
                raise TransactionError("unreachable", f"the {target}: {exc.reason}") from exc
            raise
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
                            opened.digest, opened.fields)
        self.log.info("order %s from %s: %s", opened.header.order_id.hex(),
                      opened.header.holder, opened.fields[OrderField.ITEMS.value])
        self.crash_point("after-receive")
        outcome = await self._drive(opened.header.order_id, opened=opened)
        flow("x", "seller", "holder", f"outcome: {outcome['status']}")
        return self._answer(opened.header.order_id, outcome)

    async def on_status(self, body: Fields) -> bytes:
        order_id = body.get("order", bytes, min_size=16, max_size=16)
        record = self.orders.get(order_id)
        if record is None:
            raise TransactionError("unknown-order", f"no order {order_id.hex()}")
        if record.status.final:
            return self._answer(order_id, {})
        return frame(MessageType.OUTCOME, order=order_id, status="pending",
                     reason=f"the order is {record.status.value}; the seller is still "
                            f"driving it")

    def _answer(self, order_id: bytes, outcome: Outcome) -> bytes:
        """The holder's answer: for a final order, the very frame recorded with its outcome
        (every retransmission of the question gets the same bytes); else `outcome` framed."""
        record = self.orders.get(order_id)
        if record is not None and record.status.final:
            if record.answer is not None:
                return bytes(record.answer)
            assert record.outcome is not None  # a row finalised before answers were kept
            return frame(MessageType.OUTCOME, **codec.decode(record.outcome))
        return frame(MessageType.OUTCOME, **outcome)

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

    async def _drive(self, order_id: bytes, *, opened: OpenedPart | None = None,
                     overdue: bool = False) -> Outcome:
        """Take the order as far as it goes now; record and return the outcome if final.
        Whatever the caller saw of the order may be stale: its status is read here, once no
        one else is driving it, and moved only along the order book's transitions."""
        # `_driving` keeps two tasks of this process apart; the order book's claim keeps
        # this process apart from every other instance of the seller on the same database
        if order_id in self._driving:
            return {"order": order_id, "status": "pending", "reason": "being processed"}
        try:
            claimed = self.orders.claim(order_id)
        except TransactionError as exc:  # storage full or unreachable: the order waits
            self.log.warning("order %s pending: %s", order_id.hex(), exc)
            return {"order": order_id, "status": "pending", "reason": str(exc)}
        if not claimed:
            return {"order": order_id, "status": "pending", "reason": "being processed"}
        self._driving.add(order_id)
        try:
            return await self._drive_now(order_id, opened, overdue)
        finally:
            self._driving.discard(order_id)
            with contextlib.suppress(TransactionError):  # unreleased, the claim expires
                self.orders.release(order_id)

    async def _drive_now(self, order_id: bytes, opened: OpenedPart | None,
                         overdue: bool) -> Outcome:
        """Perform the steps host.parties.lifecycle chooses until the order is final, or a
        peer cannot be reached (the order then stays where it is, pending)."""
        record = self.orders.get(order_id)
        if record is None:
            raise TransactionError("unknown-order", f"no order {order_id.hex()}")
        step = next_step(record.status, overdue=overdue, note=record.note)
        if isinstance(step, Answered):  # finished since the caller looked: nothing to redo
            assert record.outcome is not None
            return dict(codec.decode(record.outcome))
        env = Envelope.from_cbor(codec.decode(record.envelope))
        order = _Order(order_id, env, envelope.Header.from_bytes(env.header), record.digest,
                       opened)
        extra: Outcome = {}  # the outcome's fields beyond its status, from the last answer
        try:
            while not isinstance(step, Finish):
                try:
                    event, extra = await self._perform(step, order)
                except Unfinishable as exc:
                    event, extra = Refused(str(exc)), {}
                after = advance(step, event, self._status(order_id))
                if isinstance(event, Refused) and isinstance(after, Void):
                    self.log.warning("order %s will not complete (%s): voiding",
                                     order_id.hex(), event.reason)
                step = after
            return self._finish(order_id, {"order": order_id, "status": step.status.value,
                                           "reason": step.reason, **extra})
        except TransactionError as exc:
            self.log.warning("order %s pending: %s", order_id.hex(), exc)
            return {"order": order_id, "status": "pending", "reason": str(exc)}

    def _status(self, order_id: bytes) -> OrderStatus:
        record = self.orders.get(order_id)
        if record is None:
            raise TransactionError("unknown-order", f"no order {order_id.hex()}")
        return record.status

    def _finish(self, order_id: bytes, outcome: Outcome) -> Outcome:
        """Record a final outcome with the exact frame the holder gets for it."""
        self.orders.move(order_id, OrderStatus(outcome["status"]), outcome=codec.encode(outcome),
                         answer=frame(MessageType.OUTCOME, **outcome))
        return outcome

    async def _perform(self, step: Sent, order: _Order) -> tuple[Event, Outcome]:
        """One step on the network: the event it brought and the outcome fields it gives."""
        if isinstance(step, Void):
            if step.mark:
                self.orders.move(order.order_id, OrderStatus.VOIDING, note=step.reason)
            return await self._void(order, step.reason)
        if order.opened is None:  # no freshness: it was fresh when received
            order.opened = await open_own_part(self.keys, Party.SELLER, order.env.header,
                                               order.env.parts[Party.SELLER], None)
        if isinstance(step, Authorise):
            return await self._authorise(order, order.opened, step.mark)
        if step.approval is not None:
            self.orders.move(order.order_id, OrderStatus.APPROVED, approval=step.approval)
            self.crash_point("after-approval")
            mac, receipt = step.approval
        else:  # approved before a crash or a failed delivery attempt: its record has the MAC
            mac, receipt = self.orders.approval(order.order_id)
        return await self._deliver(order, order.opened, mac, receipt)

    async def _authorise(self, order: _Order, opened: OpenedPart,
                         mark: bool) -> tuple[Event, Outcome]:
        env, header, order_id = order.env, order.header, order.order_id
        amount = opened.fields[OrderField.AMOUNT.value]
        issuer_part = env.parts[Party.ISSUER]
        auth = await self._exchange(
            Party.ISSUER, MessageType.AUTHORISE, MessageType.AUTHORISATION,
            # recorded before the request leaves: from then on a debit may exist
            before_send=(lambda: self.orders.move(order_id, OrderStatus.AUTHORISING))
            if mark else None,
            header=env.header, part=issuer_part,
            mac=await self.keys.mac(header.issuer, request_digest(env.header, issuer_part),
                                    context("authorise", order_id)))
        code = auth.body.get("code", str, max_size=16)
        reason = auth.body.get("reason", str, max_size=500)
        their_amount = auth.body.get("amount", int)
        mac = auth.body.get("mac", bytes, max_size=64)
        await self._check(header.issuer, authorisation_body(order_id, code, reason,
                                                            their_amount, opened.digest),
                          mac, context("authorisation", order_id), "authorisation")
        receipt = auth.body.get("receipt", bytes, max_size=1024)
        return (Authorised(code, reason, their_amount, amount, mac, receipt),
                {"amount": amount, "issuer_receipt": receipt})

    async def _deliver(self, order: _Order, opened: OpenedPart, mac: bytes,
                       receipt: bytes) -> tuple[Event, Outcome]:
        env, header, order_id = order.env, order.header, order.order_id
        delivery = await self._exchange(
            Party.DELIVERY, MessageType.DELIVER, MessageType.DELIVERY,
            header=env.header, part=env.parts[Party.DELIVERY], approval=mac,
            mac=await self.keys.mac(header.delivery,
                                    request_digest(env.header, env.parts[Party.DELIVERY], mac),
                                    context("delivery-request", order_id)))
        tracking = delivery.body.get("tracking", str, max_size=64)
        await self._check(header.delivery, delivery_answer_body(order_id, opened.digest, tracking),
                          delivery.body.get("mac", bytes, max_size=64),
                          context("delivery-answer", order_id), "delivery answer")
        return Shipped(), {
            "amount": opened.fields[OrderField.AMOUNT.value], "tracking": tracking,
            "issuer_receipt": receipt,
            "delivery_receipt": delivery.body.get("receipt", bytes, max_size=1024)}

    async def _void(self, order: _Order, reason: str) -> tuple[Event, Outcome]:
        """Have the card manager cancel any charge for an order that will not complete."""
        env, header, order_id, digest = order.env, order.header, order.order_id, order.digest
        answer = await self._exchange(
            Party.ISSUER, MessageType.REVERSE, MessageType.REVERSED,
            header=env.header, digest=digest, reason=reason,
            mac=await self.keys.mac(header.issuer, reverse_body(order_id, digest, reason),
                                    context("reverse", order_id)))
        code = answer.body.get("code", str, max_size=16)
        amount = answer.body.get("amount", int)
        await self._check(header.issuer, reversed_body(order_id, code, amount, digest),
                          answer.body.get("mac", bytes, max_size=64),
                          context("reversed", order_id), "reversal")
        return Cancelled(code), {
            "issuer_receipt": answer.body.get("receipt", bytes, max_size=1024)}

    async def _check(self, peer: str, body: bytes, mac: bytes, ctx: bytes, what: str) -> None:
        try:
            await self.keys.check_mac(peer, body, mac, ctx, what)
        except EnvelopeError as exc:
            raise Unfinishable(exc.code, exc.reason) from exc

    async def _open(self, party: Party) -> AsyncConnection:
        endpoint = self._endpoint(party)
        try:
            return await AsyncConnection.open(endpoint.host, endpoint.port,
                                              timeout=self.config.read_timeout)
        except TransactionError as exc:
            raise TransactionError("unreachable", f"the {party}: {exc.reason}") from exc

    async def _exchange(self, party: Party, kind: MessageType, answer: MessageType, *,
                        before_send: Callable[[], None] | None = None,
                        **body: Any) -> Message:
        """Confirm `party` (claim 7), then send it one request: an unconfirmed party gets
        nothing. A final refusal becomes Unfinishable; anything else stays retryable."""
        arrow = ARROW[party]
        conn = await self._open(party)
        try:
            flow(arrow, "seller", party.value, "confirm challenge (claim 7)")
            await confirm_peer(self.keys, self.form.party_id(party), party.value, conn)
            flow(arrow, party.value, "seller", "answer verified by the seller's key module")
            if before_send is not None:
                before_send()
            flow(arrow, "seller", party.value, f"{kind}: sealed data + seller's MAC")
            reply = await conn.request(kind, answer, **body)
            flow(arrow, party.value, "seller", f"{answer}: "
                 + str(reply.body.map.get("code") or reply.body.map.get("tracking") or "?"))
            return reply
        except TransactionError as exc:
            if exc.code in FINAL_REFUSALS and not isinstance(exc, Unfinishable):
                raise Unfinishable(exc.code, f"the {party}: {exc.reason}") from exc
            raise
        finally:
            await conn.close()

    async def _drive_pending(self) -> None:
        """Resume orders a crash or an unreachable party left unfinished; void those that
        have waited too long. The list is a snapshot: `_drive` re-reads each order before it
        acts. Nothing in here may end the loop, except storage that can no longer be trusted."""
        while True:
            for order in self.orders.unfinished():
                if order.order_id in self._driving:
                    continue
                try:
                    await self._resume(order)
                except StorageLost as exc:
                    self.halt(exc)
                    return
                except Exception:
                    self.log.exception("order %s: resuming failed", order.order_id.hex())
            await asyncio.sleep(self.seller.retry_every)

    async def _resume(self, order: OrderRecord) -> None:
        overdue = time.time() - order.since > self.seller.give_up_after
        outcome = await self._drive(order.order_id, overdue=overdue)
        if outcome["status"] != "pending":
            self.log.info("order %s resumed: %s", order.order_id.hex(), outcome["status"])
