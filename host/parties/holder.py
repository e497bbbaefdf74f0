"""The card holder's terminal: fetch the seller's form, confirm all three parties with the card
(claim 7), have the card seal one part per party, send the envelope, and check the receipts.

The card does every key operation; this code sees the parts in clear only because it builds
them. Before the card seals anything the terminal refuses a form that names another seller
than the one the holder means to pay, a form the card cannot verify as that seller's (a MAC
under the seller -> holder key over the exact form bytes and a fresh nonce, so nothing in it
can be swapped in transit), a policy that leaks (PolicyError, raised by OrderForm itself), and
an amount the holder did not approve or that is above the holder's ceiling. It sends nothing
before every party has passed the card's EXTERNAL AUTHENTICATE.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from host.errors import EnvelopeError, ErrorCode, PolicyError, Refused, TransactionError
from host.parties.connection import Connection
from host.protocol import codec, envelope
from host.protocol.envelope import SealedOrder, context
from host.protocol.messages import (
    Confirm,
    Confirmed,
    Form,
    FormRequest,
    OrderOutcome,
    OrderSubmission,
    OutcomeStatus,
    StatusQuery,
)
from host.protocol.money import Money
from host.protocol.order import Order, OrderField, OrderForm, Party
from host.protocol.receipts import DeliveryReceipt, IssuerReceipt
from terminal.errors import ApduError
from terminal.session import CardSession

Step = Callable[[str], None]  # narration hook: the demo prints the flow as it happens


@dataclass(frozen=True, slots=True)
class Quote:
    """What the holder approves before its card seals anything."""

    seller: str
    issuer: str
    delivery: str
    amount: Money

    def __str__(self) -> str:
        return (f"pay {self.amount} to {self.seller} (card manager {self.issuer}, delivery "
                f"by {self.delivery})")


Approve = Callable[[Quote], bool]
R = TypeVar("R", IssuerReceipt, DeliveryReceipt)  # asks the holder; True only on an explicit yes


@dataclass(frozen=True, slots=True)
class Outcome:
    """The seller's `outcome` (host.protocol.messages.OrderOutcome) as the holder's card
    checked it: what the receipts prove, and what rests on the seller's word alone."""

    order_id: bytes
    status: OutcomeStatus
    reason: str
    amount: int | None = None
    tracking: str | None = None
    #: receipts the card opened: proof that the card manager / delivery company said so
    verified: frozenset[Party] = field(default_factory=frozenset)
    currency: str = ""  # the order's (its header's)

    @property
    def money(self) -> Money | None:
        return None if self.amount is None else Money(self.amount, self.currency)

    @property
    def approved(self) -> bool:
        return self.status is OutcomeStatus.COMPLETED

    @property
    def charge_verified(self) -> bool:
        """Whether the card itself checked what the card manager said about the money."""
        return Party.ISSUER in self.verified


# what the card manager must have said (in its receipt) for the seller's status to be true
CARD_MANAGER_SAID: dict[OutcomeStatus, frozenset[str | None]] = {
    OutcomeStatus.COMPLETED: frozenset({"approved"}),
    OutcomeStatus.DECLINED: frozenset({"declined"}),
    OutcomeStatus.FAILED: frozenset({"reversed", "voided", "declined", None}),
    OutcomeStatus.PENDING: frozenset({None}),
}


#: what a seller tells a connection it closes while idle (host.parties.server): on a kept
#: connection, a reason to ask again on a new one
CLOSED_WHILE_IDLE = frozenset({ErrorCode.CONNECTION_LOST, ErrorCode.TIMEOUT, ErrorCode.BUSY})


class HolderClient:
    def __init__(self, card: CardSession, pin: str, host: str, port: int,
                 narrate: Step | None = None, *, seller: str, issuer: str | None = None,
                 accept: frozenset[tuple[OrderField, Party]] = frozenset(),
                 max_amount: str | None = None, approve: Approve | None = None,
                 keep_connection: bool = False) -> None:
        """`card`: a session that passed authenticate_card() (host.centre.pairing opens one).
        `seller`: the seller the holder means to pay; a form that is not that seller's
        (by its content or by its MAC) is refused. `issuer`: the holder's own card manager;
        a form naming another is refused. `accept`: the policy exposures (field, party) the
        holder agrees to; any other makes the form refused. `max_amount` ("27.90", in the
        form's currency) is a ceiling; `approve` asks the holder. A purchase needs at least
        one of the two, and passes every one given. `keep_connection`: a holder buying
        again and again (a load test) keeps its connection to the seller open between
        orders (close() ends it); each order still confirms every party on the card."""
        self.card = card
        self.host, self.port = host, port
        self.seller, self.issuer, self.accept = seller, issuer, accept
        self.max_amount, self.approve = max_amount, approve
        self.narrate = narrate or (lambda _msg: None)
        info = card.require_authenticated()  # the PIN goes only to the expected card
        if info.holder_id is None:
            raise Refused(ErrorCode.NO_KEY, "the card is not personalised")
        self.holder = info.holder_id
        self.last_sealed: SealedOrder | None = None
        self.keep_connection = keep_connection
        self._conn: Connection | None = None  # kept between orders (keep_connection)
        self.opened = 0  # connections opened to the seller with keep_connection (tests)
        #: the last form's exact bytes and their parse: a seller sends the same form to
        #: every request, and its bytes decide everything read from them (its MAC is still
        #: checked by the card, per order, for that order's nonce)
        self._form: tuple[bytes, OrderForm] | None = None
        card.verify_pin(pin)

    def fetch_form(self, conn: Connection) -> OrderForm:
        """The seller's form, for a fresh nonce of ours, verified by the card: MACed under
        the seller -> holder key of the seller the holder named, over the exact form bytes."""
        nonce = secrets.token_bytes(envelope.FORM_NONCE_SIZE)
        reply = conn.request(FormRequest(self.holder, nonce), Form)
        form = self.read_form(reply.form)
        self.check_seller(form)
        self.verify_form(reply.form, reply.mac, nonce)
        return form

    def read_form(self, raw: bytes) -> OrderForm:
        if self._form is not None and self._form[0] == raw:
            return self._form[1]
        form = OrderForm.from_cbor(codec.decode(raw, "order form"))
        self._form = (raw, form)
        return form

    def check_seller(self, form: OrderForm) -> None:
        if form.seller != self.seller:
            raise PolicyError(f"the seller at {self.host}:{self.port} is {form.seller}, not "
                              f"{self.seller} whom you meant to pay: nothing was sealed")

    def verify_form(self, raw: bytes, mac: bytes, nonce: bytes) -> None:
        """PSO DECIPHER of the MAC (a seal box of nothing) on the card: it opens only under
        the seller -> holder key, for this nonce and these bytes."""
        self.card.set_peer(self.seller)
        try:
            opened = self.card.decrypt(mac, envelope.form_body(self.seller, self.holder,
                                                               nonce, raw),
                                       context("form", nonce))
        except ApduError as exc:
            raise EnvelopeError(ErrorCode.FORGED, f"the order form is not {self.seller}'s for "
                                f"this request (altered in transit, replayed, or from "
                                f"another seller): nothing was sealed") from exc
        if opened != b"":
            raise EnvelopeError(ErrorCode.FORGED, "the order form's MAC carries data")
        self.narrate(f"card verified the form's MAC: it is {self.seller}'s, as sent")

    def confirm(self, conn: Connection, party: Party, party_id: str) -> None:
        """The card challenges `party_id` and checks its answer; relayed by the seller for
        the card manager and the delivery company, who alone can answer."""
        self.card.set_peer(party_id)
        challenge = self.card.get_challenge()
        reply = conn.request(Confirm(party.value, self.holder, challenge), Confirmed)
        try:
            self.card.external_authenticate(reply.response)
        except ApduError as exc:
            raise Refused(ErrorCode.UNCONFIRMED, f"{party_id} ({party}) failed the card's "
                                   f"confirmation: nothing was sent to it") from exc
        self.narrate(f"card confirmed {party} {party_id}")

    def seal(self, party: Party, plaintext: bytes, aad: bytes, ctx: bytes,
             form: OrderForm) -> bytes:
        self.card.set_peer(form.party_id(party))
        return self.card.encrypt(plaintext, aad, ctx)

    def check_form(self, form: OrderForm) -> None:
        """What the holder insists on before its card seals anything for this seller."""
        if self.issuer is not None and form.issuer != self.issuer:
            raise PolicyError(f"the seller names {form.issuer} as card manager; this card's "
                              f"is {self.issuer}")
        unaccepted = form.policy.exposures - self.accept
        if unaccepted:
            listed = ", ".join(f"{f.value} to the {p.value}" for f, p in sorted(unaccepted))
            raise PolicyError(f"the seller's policy exposes {listed}: refused unless the "
                              f"holder accepts it")

    def check_amount(self, form: OrderForm, order: Order) -> Quote:
        """The holder approves what it pays and to whom, or states a ceiling (scripts)."""
        quote = Quote(form.seller, form.issuer, form.delivery,
                      Money(order.amount(form), form.currency))
        self.narrate(f"to approve: {quote}")
        if self.max_amount is None and self.approve is None:
            raise PolicyError(f"the order comes to {quote.amount}: confirm it on a terminal "
                              f"or state a ceiling (--max-amount); nothing was sealed")
        if self.max_amount is not None:
            ceiling = Money.parse(self.max_amount, form.currency)
            if quote.amount.minor > ceiling.minor:
                raise PolicyError(f"the order comes to {quote.amount}, above your ceiling of "
                                  f"{ceiling}: nothing was sealed")
        if self.approve is not None and not self.approve(quote):
            raise PolicyError(f"you did not approve paying {quote.amount}: nothing was sealed")
        return quote

    def prepare(self, conn: Connection, order: Order) -> tuple[OrderForm, SealedOrder]:
        form = self.fetch_form(conn)
        return form, self.seal_order(conn, form, order)

    def seal_order(self, conn: Connection, form: OrderForm, order: Order) -> SealedOrder:
        """Everything after the verified form: the holder's checks, every party confirmed
        by the card, then the card seals the parts."""
        self.check_form(form)
        self.narrate(f"form from {form.seller}: {len(form.catalogue)} items, policy ok; "
                     f"amount due {Money(order.amount(form), form.currency)}")
        self.check_amount(form, order)
        for party in Party:
            self.confirm(conn, party, form.party_id(party))
        header = envelope.new_header(form, self.holder)
        sealed = envelope.build(order, form, header,
                                lambda p, pt, aad, ctx: self.seal(p, pt, aad, ctx, form))
        self.narrate(f"card sealed 3 parts for order {header.order_id.hex()}")
        self.last_sealed = sealed
        return sealed

    def buy(self, order: Order) -> Outcome:
        if not self.keep_connection:
            with Connection(self.host, self.port) as conn:
                _form, sealed = self.prepare(conn, order)
                return self.send(conn, sealed)
        conn, reused = self._connection()
        try:
            try:
                form = self.fetch_form(conn)
            except TransactionError as exc:
                if not reused or exc.code not in CLOSED_WHILE_IDLE:
                    raise
                # the seller closed our idle connection as we reused it (its idle timeout,
                # or shed from a full table): asking for a form changes nothing, so ask on a
                # fresh one
                conn.close()
                self._conn = None
                conn, _ = self._connection()
                form = self.fetch_form(conn)
            sealed = self.seal_order(conn, form, order)
            outcome = self.send(conn, sealed)
        except BaseException:
            self.close()  # the stream's state is unknown: the next order starts afresh
            raise
        return outcome

    def _connection(self) -> tuple[Connection, bool]:
        """The kept connection (reused: True), or a new one."""
        if self._conn is not None:
            if self._conn.quiet():
                return self._conn, True
            self.close()  # the seller said something unasked (why it closes) or closed it
        self._conn = Connection(self.host, self.port)
        self.opened += 1
        return self._conn, False

    def close(self) -> None:
        """End the connection kept between orders, if any."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def send(self, conn: Connection, sealed: SealedOrder) -> Outcome:
        try:
            reply = conn.request(OrderSubmission(sealed.envelope), OrderOutcome)
        except TransactionError as exc:
            if exc.code is not ErrorCode.CONNECTION_LOST:
                raise
            self.narrate("connection lost after sending: asking for the order's status")
            return self.wait_for_outcome(sealed)
        return self.read_outcome(reply, sealed)

    def status(self, sealed: SealedOrder) -> Outcome:
        with Connection(self.host, self.port) as conn:
            reply = conn.request(StatusQuery(sealed.header.order_id), OrderOutcome)
        return self.read_outcome(reply, sealed)

    def wait_for_outcome(self, sealed: SealedOrder, timeout: float = 30.0) -> Outcome:
        deadline = time.monotonic() + timeout
        while True:
            try:
                outcome = self.status(sealed)
                if outcome.status is not OutcomeStatus.PENDING:
                    return outcome
            except TransactionError as exc:
                if exc.code not in (ErrorCode.UNREACHABLE, ErrorCode.CONNECTION_LOST):
                    raise
            if time.monotonic() > deadline:
                return Outcome(sealed.header.order_id, OutcomeStatus.PENDING,
                               "no final answer from the seller yet")
            time.sleep(0.5)

    def read_outcome(self, reply: OrderOutcome, sealed: SealedOrder) -> Outcome:
        """The seller's report, checked against what the card can verify: the card manager's
        and the delivery company's sealed receipts. The seller's word alone is accepted only
        for an order that failed before any charge could exist, and is marked unverified."""
        if reply.order != sealed.header.order_id:
            raise EnvelopeError(ErrorCode.WRONG_ORDER, "the seller answered about another order")
        status, reason = reply.status, reply.reason
        verified: set[Party] = set()
        amount = tracking = None
        code = None
        if reply.issuer_receipt is not None:
            receipt = self._open_receipt(Party.ISSUER, reply.issuer_receipt, sealed,
                                         IssuerReceipt)
            code, amount = receipt.code, receipt.amount
            verified.add(Party.ISSUER)
        if code not in CARD_MANAGER_SAID[status]:
            raise EnvelopeError(ErrorCode.FORGED, f"the seller says {status} but the card "
                                f"manager said {code or 'nothing the card could check'}")
        if status is OutcomeStatus.DECLINED:
            reason = receipt.reason  # the card manager's words, not the seller's
        if reply.delivery_receipt is not None:
            tracking = self._open_receipt(Party.DELIVERY, reply.delivery_receipt, sealed,
                                          DeliveryReceipt).tracking
            verified.add(Party.DELIVERY)
        if status is OutcomeStatus.COMPLETED and Party.DELIVERY not in verified:
            raise EnvelopeError(ErrorCode.FORGED,
                                "a completed order without the delivery receipt")
        return Outcome(reply.order, status, reason, amount, tracking, frozenset(verified),
                       sealed.header.currency)

    def _open_receipt(self, party: Party, box: bytes, sealed: SealedOrder,
                      kind: type[R]) -> R:
        header = sealed.envelope.header
        self.card.set_peer(sealed.header.party_id(party))
        try:
            plaintext = self.card.decrypt(box, envelope.receipt_aad(party.value, header),
                                          context("receipt", sealed.header.order_id))
        except ApduError as exc:
            raise EnvelopeError(ErrorCode.FORGED,
                                f"the {party} receipt does not authenticate") \
                from exc
        receipt = kind.from_bytes(plaintext)
        if receipt.digest != sealed.digest:
            raise EnvelopeError(ErrorCode.FORGED,
                                f"the {party} receipt is for another order digest")
        return receipt
