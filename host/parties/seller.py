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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from host.errors import ConnectionFailed, EnvelopeError, ErrorCode, Refused, TransactionError
from host.parties import lifecycle
from host.parties.durability import crash_in_batch
from host.parties.keymodule import KeyModule
from host.parties.lifecycle import (
    Answered,
    Authorised,
    Cancelled,
    Event,
    Finish,
    Sent,
    Shipped,
    Void,
    advance,
    next_step,
)
from host.parties.server import (
    PartyServer,
    ServerConfig,
    open_part,
    our_header,
    request_digest,
)
from host.parties.session import POOL_SIZE, SessionPool
from host.protocol import codec, envelope
from host.protocol.envelope import (
    Envelope,
    OpenedPart,
    authorisation_body,
    context,
    delivery_answer_body,
    reverse_body,
    reversed_body,
)
from host.protocol.messages import (
    Authorisation,
    Confirm,
    Confirmed,
    Deliver,
    Delivery,
    Form,
    FormRequest,
    Message,
    OrderOutcome,
    OrderSubmission,
    OutcomeStatus,
    Reverse,
    Reversed,
    StatusQuery,
)
from host.protocol.messages import Authorise as AuthoriseMessage
from host.protocol.order import OrderForm, Party, check_role
from host.protocol.parts import SellerPart
from host.protocol.wire import MessageType
from host.storage.base import StorageLost
from host.storage.engine import open_order_book
from host.storage.order_book import OrderRecord, OrderStatus, OrderStore

flow_log = logging.getLogger("nettx.flow")
ARROW = {Party.ISSUER: "y", Party.DELIVERY: "z"}  # FIG. 1; x is holder <-> seller


def flow(arrow: str, source: str, target: str, what: str, *args: object) -> None:
    """One line per message, as FIG. 1 draws it, at DEBUG (`nettx seller serve --flow`);
    the demo replays these from the log. `what` is a %-format of `args`, formatted only
    when the line is logged: an order passes here ~20 times."""
    if flow_log.isEnabledFor(logging.DEBUG):
        flow_log.debug("FLOW %s %s -> %s: " + what, arrow, source, target, *args)


# Failures that are not worth retrying: the order will not complete. Anything else (a party
# down, a timeout, an internal error over there) leaves it pending, to be driven again.
# `error` frames are not authenticated, so a refusal received after the authorisation request
# went out may be a lie covering a real debit: such an order is voided, never just dropped.
E = ErrorCode
FINAL_REFUSALS = frozenset({E.FORGED, E.REPLAY, E.MALFORMED, E.COMMITMENT, E.WRONG_PARTY,
                            E.STALE, E.UNCONFIRMED, E.VERSION, E.UNEXPECTED, E.AMOUNT})
#: a relayed confirmation that failed on the way to the party, not on the holder's connection
#: (a session the party broke off, or one a frame on the way broke, included)
UPSTREAM_FAILURES = frozenset({E.CONNECTION_LOST, E.TIMEOUT, E.TRUNCATED, E.NO_SESSION,
                               E.UNAUTHENTICATED, E.BAD_MAC, E.SEQUENCE})

A = TypeVar("A", Authorisation, Reversed, Delivery)
R = TypeVar("R", Authorisation, Reversed, Delivery, Confirmed)
Opened = OpenedPart[SellerPart]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the last answer lets the holder's outcome carry beyond its status and reason:
    the amount, the tracking reference, and the receipts sealed for the holder's card."""

    amount: int | None = None
    tracking: str | None = None
    issuer_receipt: bytes | None = None
    delivery_receipt: bytes | None = None


class Unfinishable(TransactionError):
    """The order cannot complete; the card manager must cancel any charge for it."""


@dataclass(slots=True)
class _Received:
    """A new order as the holder's `order` hands it to its drive: the envelope and the seller
    part already parsed and opened (not read back from the record and parsed again), and the
    frame the drive recorded for the holder, once final (not read back either)."""

    env: Envelope
    opened: Opened
    answer: bytes | None = None


@dataclass(slots=True)
class _Order:
    """An order being driven: what its record holds, and its seller part once opened."""

    order_id: bytes
    env: Envelope
    header: envelope.Header
    digest: bytes
    opened: Opened | None


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
    pool_size: int = POOL_SIZE  # sessions kept open to each of the two parties


class SellerServer(PartyServer):
    role = Party.SELLER.value

    def __init__(self, keys: KeyModule, config: ServerConfig, seller: SellerConfig) -> None:
        super().__init__(keys, config)
        if seller.form.seller != keys.identifier:
            raise Refused(E.WRONG_PARTY, f"the form is {seller.form.seller}'s, this "
                                                  f"key is {keys.identifier}'s")
        self.seller = seller
        self.form = seller.form
        self._read = SellerPart.reader(seller.form)
        self._form_bytes = codec.encode(seller.form.to_cbor())  # the bytes its MACs cover
        self.orders: OrderStore = open_order_book(
            seller.orders_path, batch_hook=crash_in_batch(config.crash_at, self.crash_point))
        self._driving: set[bytes] = set()
        # one pool of confirmed sessions per party, reused across orders (host.parties.session)
        self.pools = {party: SessionPool(
            keys, self._endpoint(party).host, self._endpoint(party).port,
            self.form.party_id(party), party.value, timeout=config.read_timeout,
            size=seller.pool_size) for party in ARROW}
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
        for pool in self.pools.values():
            await pool.close()
        self.orders.close()

    def _endpoint(self, party: Party) -> Endpoint:
        return self.seller.issuer if party is Party.ISSUER else self.seller.delivery

    # -- the holder's side ----------------------------------------------------------------------

    async def on_form_request(self, request: FormRequest) -> bytes:
        """The form as bytes, MACed for the asking holder under the seller -> holder key over
        its nonce and those bytes: the holder's card checks it, so nothing on the way can
        swap the delivery company, the card manager or a price."""
        try:
            check_role(request.holder, "holder")
        except ValueError as exc:
            raise Refused(E.MALFORMED, str(exc)) from exc
        flow("x", "holder", "seller", "order form request (holder id, nonce)")
        mac = await self.keys.mac(request.holder,
                                  envelope.form_body(self.identifier, request.holder,
                                                     request.nonce, self._form_bytes),
                                  context("form", request.nonce))
        flow("x", "seller", "holder", "order form: catalogue, parties, partition policy; "
                                      "MAC seller -> holder")
        return Form(self._form_bytes, mac).to_frame()

    async def on_confirm(self, message: Confirm) -> bytes:
        if message.party == self.role:
            flow("x", "holder", "seller", "confirm challenge (claim 7)")
            flow("x", "seller", "holder", "answer under seller -> holder key")
            return await super().on_confirm(message)
        try:
            target = Party(message.party)
        except ValueError:
            raise Refused(E.WRONG_PARTY, f"no party {message.party!r} here") from None
        # relay: we carry the challenge and the answer but hold neither key
        flow("x", "holder", "seller", "confirm challenge for the %s (to relay)", target)
        flow(ARROW[target], "seller", target.value, "relayed challenge")
        try:
            reply = await self._request(target, message, Confirmed)
        except TransactionError as exc:
            if exc.code in UPSTREAM_FAILURES:
                # the upstream party failed, not the holder's connection: say so to the holder
                raise ConnectionFailed(E.UNREACHABLE, f"the {target}: {exc.reason}") from exc
            raise
        flow(ARROW[target], target.value, "seller", "answer under %s -> holder key", target)
        flow("x", "seller", "holder", "relayed %s answer (the seller cannot forge it)", target)
        return Confirmed(reply.response).to_frame()

    async def on_order(self, message: OrderSubmission) -> bytes:
        env = message.envelope
        flow("x", "holder", "seller", "envelope: header + 3 parts sealed by the card")
        opened = await self._open_seller_part(env)
        header, part = opened.header, opened.part
        # held while the receive is awaited: the resuming loop must not take up an order
        # between its record and this drive (an id already held is a replay: refused below)
        held = header.order_id not in self._driving
        self._driving.add(header.order_id)
        try:
            # claimed as it is recorded: this drive takes it up next
            await self.orders.receive(header.order_id, codec.encode(env.to_cbor()),
                                      header.holder, part.amount, opened.digest, part.names,
                                      claim=True)
        finally:
            if held:
                self._driving.discard(header.order_id)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("order %s from %s: %s", header.order_id.hex(), header.holder,
                           ", ".join(map(str, part.items)))
        self.crash_point("after-receive")
        received = _Received(env, opened)
        outcome = await self._drive(header.order_id, received=received, claimed=True)
        flow("x", "seller", "holder", "outcome: %s", outcome.status)
        # the one line an order leaves at INFO (a pending one is logged where it stopped)
        if outcome.final:
            self.log.info("order %s from %s: %s", header.order_id.hex(), header.holder,
                          outcome.status)
        if received.answer is not None:  # the frame this drive just recorded
            return received.answer
        return self._answer(header.order_id, outcome)

    async def on_status(self, query: StatusQuery) -> bytes:
        record = self.orders.get(query.order)
        if record is None:
            raise Refused(E.UNKNOWN_ORDER, f"no order {query.order.hex()}")
        if record.status.final:
            return self._answer(query.order, None)
        return OrderOutcome(query.order, OutcomeStatus.PENDING,
                            f"the order is {record.status.value}; the seller is still "
                            f"driving it").to_frame()

    def _answer(self, order_id: bytes, outcome: OrderOutcome | None) -> bytes:
        """The holder's answer: for a final order, the very frame recorded with its outcome
        (every retransmission of the question gets the same bytes); else `outcome` framed."""
        record = self.orders.get(order_id)
        if record is not None and record.status.final:
            if record.answer is not None:
                return bytes(record.answer)
            return self._recorded(record).to_frame()  # a row finalised before answers were kept
        assert outcome is not None
        return outcome.to_frame()

    @staticmethod
    def _recorded(record: OrderRecord) -> OrderOutcome:
        assert record.outcome is not None
        return OrderOutcome.from_cbor(codec.decode(record.outcome))

    async def _open_seller_part(self, env: Envelope) -> Opened:
        """Our part of a new order: it names us, it is fresh, and it is on our form."""
        header = our_header(self.keys, Party.SELLER, env.header)
        header.check_fresh(self.config.window)
        return await open_part(self.keys, Party.SELLER, header, env.header,
                               env.parts[Party.SELLER], self._read)

    # -- driving an order: card manager, then delivery ------------------------------------------

    async def _drive(self, order_id: bytes, *, received: _Received | None = None,
                     overdue: bool = False, claimed: bool = False) -> OrderOutcome:
        """Take the order as far as it goes now; record and return the outcome if final.
        Whatever the caller saw of the order may be stale: its status is read here, once no
        one else is driving it, and moved only along the order book's transitions.
        `claimed`: this instance claimed the order as it recorded it (a new one)."""
        # `_driving` keeps two tasks of this process apart; the order book's claim keeps
        # this process apart from every other instance of the seller on the same database
        if order_id in self._driving:
            return OrderOutcome(order_id, OutcomeStatus.PENDING, "being processed")
        # taken before the claim is awaited, and kept until the release is: a task of this
        # process that looks meanwhile finds the order being driven
        self._driving.add(order_id)
        try:
            if not claimed:
                try:
                    claimed = await self.orders.claim(order_id)
                except TransactionError as exc:  # storage full or unreachable: the order waits
                    self.log.warning("order %s pending: %s", order_id.hex(), exc)
                    return OrderOutcome(order_id, OutcomeStatus.PENDING, str(exc))
                if not claimed:
                    return OrderOutcome(order_id, OutcomeStatus.PENDING, "being processed")
            outcome: OrderOutcome | None = None
            try:
                outcome = await self._drive_now(order_id, received, overdue)
                return outcome
            finally:
                # the move that made the order final released the claim with it
                if outcome is None or not outcome.final:
                    with contextlib.suppress(TransactionError):  # unreleased, it expires
                        await self.orders.release(order_id)
        finally:
            self._driving.discard(order_id)

    async def _drive_now(self, order_id: bytes, received: _Received | None,
                         overdue: bool) -> OrderOutcome:
        """Perform the steps host.parties.lifecycle chooses until the order is final, or a
        peer cannot be reached (the order then stays where it is, pending)."""
        record = self.orders.get(order_id)
        if record is None:
            raise Refused(E.UNKNOWN_ORDER, f"no order {order_id.hex()}")
        step = next_step(record.status, overdue=overdue, note=record.note)
        if isinstance(step, Answered):  # finished since the caller looked: nothing to redo
            with contextlib.suppress(TransactionError):  # the claim just taken; or it expires
                await self.orders.release(order_id)
            return self._recorded(record)
        if received is not None:  # a new order: parsed and opened by the holder's `order`
            env, opened = received.env, received.opened
            header = opened.header
        else:
            env, opened = Envelope.from_cbor(codec.decode(record.envelope)), None
            header = our_header(self.keys, Party.SELLER, env.header)
        order = _Order(order_id, env, header, record.digest, opened)
        evidence = Evidence()  # from the last answer
        try:
            while not isinstance(step, Finish):
                try:
                    event, evidence = await self._perform(step, order)
                except Unfinishable as exc:
                    event, evidence = lifecycle.Refused(str(exc)), Evidence()
                after = advance(step, event, self._status(order_id))
                if isinstance(event, lifecycle.Refused) and isinstance(after, Void):
                    self.log.warning("order %s will not complete (%s): voiding",
                                     order_id.hex(), event.reason)
                step = after
            outcome = OrderOutcome(
                order_id, OutcomeStatus(step.status.value), step.reason, evidence.amount,
                evidence.tracking, evidence.issuer_receipt, evidence.delivery_receipt)
            answer = await self._finish(outcome)
            if received is not None:
                received.answer = answer
            return outcome
        except TransactionError as exc:
            self.log.warning("order %s pending: %s", order_id.hex(), exc)
            return OrderOutcome(order_id, OutcomeStatus.PENDING, str(exc))

    def _status(self, order_id: bytes) -> OrderStatus:
        status = self.orders.status(order_id)
        if status is None:
            raise Refused(E.UNKNOWN_ORDER, f"no order {order_id.hex()}")
        return status[0]

    async def _finish(self, outcome: OrderOutcome) -> bytes:
        """Record a final outcome with the exact frame the holder gets for it; returns the
        frame."""
        answer = outcome.to_frame()
        await self.orders.move(outcome.order, OrderStatus(outcome.status.value),
                               outcome=codec.encode(outcome.to_cbor()), answer=answer)
        return answer

    async def _perform(self, step: Sent, order: _Order) -> tuple[Event, Evidence]:
        """One step on the network: the event it brought and the outcome fields it gives."""
        if isinstance(step, Void):
            if step.mark:
                await self.orders.move(order.order_id, OrderStatus.VOIDING, note=step.reason)
            return await self._void(order, step.reason)
        if order.opened is None:  # no freshness: it was fresh when received
            order.opened = await open_part(self.keys, Party.SELLER, order.header,
                                           order.env.header, order.env.parts[Party.SELLER],
                                           self._read)
        if isinstance(step, lifecycle.Authorise):
            return await self._authorise(order, order.opened, step.mark)
        if step.approval is not None:
            await self.orders.move(order.order_id, OrderStatus.APPROVED,
                                   approval=step.approval)
            self.crash_point("after-approval")
            mac, receipt = step.approval
        else:  # approved before a crash or a failed delivery attempt: its record has the MAC
            mac, receipt = self.orders.approval(order.order_id)
        return await self._deliver(order, order.opened, mac, receipt)

    async def _authorise(self, order: _Order, opened: Opened,
                         mark: bool) -> tuple[Event, Evidence]:
        env, header, order_id = order.env, order.header, order.order_id
        amount = opened.part.amount
        issuer_part = env.parts[Party.ISSUER]
        auth = await self._exchange(
            Party.ISSUER, AuthoriseMessage(env.header, issuer_part, await self.keys.mac(
                header.issuer, request_digest(env.header, issuer_part),
                context("authorise", order_id))), Authorisation,
            # recorded before the request leaves: from then on a debit may exist
            before_send=(lambda: self.orders.move(order_id, OrderStatus.AUTHORISING))
            if mark else None)
        await self._check(header.issuer, authorisation_body(order_id, auth.code, auth.reason,
                                                            auth.amount, opened.digest),
                          auth.mac, context("authorisation", order_id), "authorisation")
        return (Authorised(auth.code, auth.reason, auth.amount, amount, auth.mac, auth.receipt),
                Evidence(amount, issuer_receipt=auth.receipt))

    async def _deliver(self, order: _Order, opened: Opened, mac: bytes,
                       receipt: bytes) -> tuple[Event, Evidence]:
        env, header, order_id = order.env, order.header, order.order_id
        part = env.parts[Party.DELIVERY]
        delivery = await self._exchange(Party.DELIVERY, Deliver(
            env.header, part, await self.keys.mac(
                header.delivery, request_digest(env.header, part, mac),
                context("delivery-request", order_id)), approval=mac), Delivery)
        await self._check(header.delivery,
                          delivery_answer_body(order_id, opened.digest, delivery.tracking),
                          delivery.mac, context("delivery-answer", order_id), "delivery answer")
        return Shipped(), Evidence(opened.part.amount, delivery.tracking, receipt,
                                   delivery.receipt)

    async def _void(self, order: _Order, reason: str) -> tuple[Event, Evidence]:
        """Have the card manager cancel any charge for an order that will not complete."""
        env, header, order_id, digest = order.env, order.header, order.order_id, order.digest
        answer = await self._exchange(Party.ISSUER, Reverse(
            env.header, digest, reason, await self.keys.mac(
                header.issuer, reverse_body(order_id, digest, reason),
                context("reverse", order_id))), Reversed)
        await self._check(header.issuer,
                          reversed_body(order_id, answer.code, answer.amount, digest),
                          answer.mac, context("reversed", order_id), "reversal")
        return Cancelled(answer.code), Evidence(issuer_receipt=answer.receipt)

    async def _check(self, peer: str, body: bytes, mac: bytes, ctx: bytes, what: str) -> None:
        try:
            await self.keys.check_mac(peer, body, mac, ctx, what)
        except EnvelopeError as exc:
            raise Unfinishable(exc.code, exc.reason) from exc

    async def _request(self, party: Party, request: Message, answer: type[R], *,
                       before_send: Callable[[], Awaitable[None]] | None = None) -> R:
        """One request over a pooled session with `party`: confirmed by the handshake when
        the session opened (claim 7), so an unconfirmed party gets nothing."""
        pool = self.pools[party]
        opened = pool.opened
        try:
            reply = await pool.request(request, answer, before_send=before_send)
        except ConnectionFailed as exc:
            if exc.code is E.UNREACHABLE:
                raise ConnectionFailed(E.UNREACHABLE, f"the {party}: {exc.reason}") from exc
            raise
        if pool.opened != opened:
            arrow = ARROW[party]
            flow(arrow, "seller", party.value, "hello: session handshake (claim 7, both ways)")
            flow(arrow, party.value, "seller", "proof verified by the seller's key module")
        return reply

    async def _exchange(self, party: Party, request: Message, answer: type[A], *,
                        before_send: Callable[[], Awaitable[None]] | None = None) -> A:
        """Send `party` one request in a confirmed session. A final refusal becomes
        Unfinishable; anything else stays retryable."""
        arrow = ARROW[party]
        try:
            reply = await self._request(party, request, answer, before_send=before_send)
            flow(arrow, "seller", party.value, "%s: sealed data + seller's MAC", request.TYPE)
            flow(arrow, party.value, "seller", "%s: %s", answer.TYPE,
                 (reply.tracking if isinstance(reply, Delivery) else reply.code) or "?")
            return reply
        except TransactionError as exc:
            if exc.code in FINAL_REFUSALS and not isinstance(exc, Unfinishable):
                raise Unfinishable(exc.code, f"the {party}: {exc.reason}") from exc
            raise

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
        if outcome.final:
            self.log.info("order %s resumed: %s", order.order_id.hex(), outcome.status)
