"""The card holder's terminal: fetch the seller's form, confirm all three parties with the card
(claim 7), have the card seal one part per party, send the envelope, and check the receipts.

The card does every key operation; this code sees the parts in clear only because it builds
them. It refuses a form whose policy leaks (PolicyError, raised by OrderForm itself), and it
sends nothing before every party has passed the card's EXTERNAL AUTHENTICATE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from host import codec, envelope
from host.codec import Fields
from host.envelope import SealedOrder, context
from host.errors import EnvelopeError, PolicyError, TransactionError
from host.order import Order, OrderField, OrderForm, Party
from host.wire import Connection, Message, MessageType
from terminal.errors import ApduError
from terminal.session import CardSession

Step = Callable[[str], None]  # narration hook: the demo prints the flow as it happens


@dataclass(frozen=True, slots=True)
class Outcome:
    order_id: bytes
    status: str  # completed | declined | failed | pending
    reason: str
    amount: int | None = None
    tracking: str | None = None
    #: receipts the card opened: proof that the card manager / delivery company said so
    verified: frozenset[Party] = field(default_factory=frozenset)

    @property
    def approved(self) -> bool:
        return self.status == "completed"

    @property
    def charge_verified(self) -> bool:
        """Whether the card itself checked what the card manager said about the money."""
        return Party.ISSUER in self.verified


class HolderClient:
    def __init__(self, card: CardSession, pin: str, host: str, port: int,
                 narrate: Step | None = None, *, issuer: str | None = None,
                 accept: frozenset[tuple[OrderField, Party]] = frozenset()) -> None:
        """`card`: a session that passed authenticate_card() (host.pairing opens one).
        `issuer`: the holder's own card manager; a form naming another is refused.
        `accept`: the policy exposures (field, party) the holder agrees to; any other makes
        the form refused."""
        self.card = card
        self.host, self.port = host, port
        self.issuer, self.accept = issuer, accept
        self.narrate = narrate or (lambda _msg: None)
        info = card.require_authenticated()  # the PIN goes only to the expected card
        if info.holder_id is None:
            raise TransactionError("no-key", "the card is not personalised")
        self.holder = info.holder_id
        self.last_sealed: SealedOrder | None = None
        card.verify_pin(pin)

    def fetch_form(self, conn: Connection) -> OrderForm:
        reply = conn.request(MessageType.FORM_REQUEST, MessageType.FORM)
        return OrderForm.from_cbor(reply.body.get("form", dict))

    def confirm(self, conn: Connection, party: Party, party_id: str) -> None:
        """The card challenges `party_id` and checks its answer; relayed by the seller for
        the card manager and the delivery company, who alone can answer."""
        self.card.set_peer(party_id)
        challenge = self.card.get_challenge()
        reply = conn.request(MessageType.CONFIRM, MessageType.CONFIRMED, party=party.value,
                             peer=self.holder, challenge=challenge)
        try:
            self.card.external_authenticate(reply.body.get("response", bytes, max_size=64))
        except ApduError as exc:
            raise TransactionError("unconfirmed", f"{party_id} ({party}) failed the card's "
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

    def prepare(self, conn: Connection, order: Order) -> tuple[OrderForm, SealedOrder]:
        form = self.fetch_form(conn)
        self.check_form(form)
        self.narrate(f"form from {form.seller}: {len(form.catalogue)} items, policy ok; "
                     f"amount due {order.amount(form) / 100:.2f} {form.currency}")
        for party in Party:
            self.confirm(conn, party, form.party_id(party))
        header = envelope.new_header(form, self.holder)
        sealed = envelope.build(order, form, header,
                                lambda p, pt, aad, ctx: self.seal(p, pt, aad, ctx, form))
        self.narrate(f"card sealed 3 parts for order {header.order_id.hex()}")
        self.last_sealed = sealed
        return form, sealed

    def buy(self, order: Order) -> Outcome:
        with Connection(self.host, self.port) as conn:
            _form, sealed = self.prepare(conn, order)
            return self.send(conn, sealed)

    def send(self, conn: Connection, sealed: SealedOrder) -> Outcome:
        try:
            reply = conn.request(MessageType.ORDER, MessageType.OUTCOME,
                                 envelope=sealed.envelope.to_cbor())
        except TransactionError as exc:
            if exc.code != "connection-lost":
                raise
            self.narrate("connection lost after sending: asking for the order's status")
            return self.wait_for_outcome(sealed)
        return self.read_outcome(reply, sealed)

    def status(self, sealed: SealedOrder) -> Outcome:
        with Connection(self.host, self.port) as conn:
            reply = conn.request(MessageType.STATUS, MessageType.OUTCOME,
                                 order=sealed.header.order_id)
        return self.read_outcome(reply, sealed)

    def wait_for_outcome(self, sealed: SealedOrder, timeout: float = 30.0) -> Outcome:
        deadline = time.monotonic() + timeout
        while True:
            try:
                outcome = self.status(sealed)
                if outcome.status != "pending":
                    return outcome
            except TransactionError as exc:
                if exc.code not in ("unreachable", "connection-lost"):
                    raise
            if time.monotonic() > deadline:
                return Outcome(sealed.header.order_id, "pending",
                               "no final answer from the seller yet")
            time.sleep(0.5)

    def read_outcome(self, reply: Message, sealed: SealedOrder) -> Outcome:
        """The seller's report, checked against what the card can verify: the card manager's
        and the delivery company's sealed receipts. The seller's word alone is accepted only
        for an order that failed before any charge could exist, and is marked unverified."""
        body = reply.body
        order_id = body.get("order", bytes, max_size=16)
        if order_id != sealed.header.order_id:
            raise EnvelopeError("wrong-order", "the seller answered about another order")
        status = body.get("status", str, max_size=16)
        reason = body.get("reason", str, max_size=1000)
        verified: set[Party] = set()
        amount = tracking = None
        code = None
        issuer_receipt = body.get("issuer_receipt", bytes, max_size=1024, optional=True)
        if issuer_receipt is not None:
            receipt = self._open_receipt(Party.ISSUER, issuer_receipt, sealed)
            code, amount = receipt.get("code", str), receipt.get("amount", int)
            verified.add(Party.ISSUER)
        # what the card manager must have said for the seller's status to be true
        expected = {"completed": {"approved"}, "declined": {"declined"},
                    "failed": {"reversed", "voided", "declined", None}, "pending": {None}}
        if status not in expected:
            raise EnvelopeError("malformed", f"unknown order status {status!r}")
        if code not in expected[status]:
            raise EnvelopeError("forged", f"the seller says {status} but the card manager "
                                          f"said {code or 'nothing the card could check'}")
        if status == "declined":
            reason = receipt.get("reason", str)  # the card manager's words, not the seller's
        delivery_receipt = body.get("delivery_receipt", bytes, max_size=1024, optional=True)
        if delivery_receipt is not None:
            tracking = self._open_receipt(Party.DELIVERY, delivery_receipt,
                                          sealed).get("tracking", str)
            verified.add(Party.DELIVERY)
        if status == "completed" and Party.DELIVERY not in verified:
            raise EnvelopeError("forged", "a completed order without the delivery receipt")
        return Outcome(order_id, status, reason, amount, tracking, frozenset(verified))

    def _open_receipt(self, party: Party, box: bytes, sealed: SealedOrder) -> Fields:
        header = sealed.envelope.header
        self.card.set_peer(sealed.header.party_id(party))
        try:
            plaintext = self.card.decrypt(box, envelope.receipt_aad(party.value, header),
                                          context("receipt", sealed.header.order_id))
        except ApduError as exc:
            raise EnvelopeError("forged", f"the {party} receipt does not authenticate") \
                from exc
        receipt = Fields(codec.decode(plaintext, "receipt"), f"{party} receipt")
        if receipt.get("digest", bytes) != sealed.digest:
            raise EnvelopeError("forged", f"the {party} receipt is for another order digest")
        return receipt
