"""The typed wire messages (host/protocol/messages.py), the error vocabulary (host/errors.py),
the typed envelope parts (host/protocol/parts.py) and the form's pricing: each message
round-trips, encodes to the bytes the protocol has always sent, and refuses every field out
of its bounds with the code a peer is told."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.errors import (
    EnvelopeError,
    ErrorCode,
    OrderError,
    PeerRefused,
    Refused,
    TransactionError,
    WireError,
)
from host.parties.connection import Connection
from host.parties.holder import Outcome
from host.protocol import codec, envelope, messages
from host.protocol.envelope import MAX_PART, SEAL_OVERHEAD, Envelope, Header
from host.protocol.messages import (
    Authorisation,
    Authorise,
    Confirm,
    Confirmed,
    Deliver,
    Delivery,
    ErrorMessage,
    Form,
    FormRequest,
    Hello,
    HelloAck,
    HelloDone,
    Message,
    OrderOutcome,
    OrderSubmission,
    OutcomeStatus,
    Reverse,
    Reversed,
    SessionFrame,
    StatusQuery,
    error_frame,
    expect,
)
from host.protocol.order import CatalogueItem, OrderField, OrderForm, Party
from host.protocol.parts import DeliveryPart, IssuerPart, SellerPart
from host.protocol.wire import LENGTH, MessageType, frame
from terminal.session import CardSession
from tests.host.market import Market, form, order
from tests.host.test_transaction import client_for

ORDER_ID = bytes(range(16))
HEADER = b"\xa1" * 40
BOX = bytes(SEAL_OVERHEAD + 8)
ENVELOPE = Envelope(HEADER, {p: BOX for p in Party})

EXAMPLES: dict[MessageType, Message] = {m.TYPE: m for m in (
    FormRequest("holder:alice@example.org", bytes(16)),
    Form(b"\xa0", bytes(33)),
    Confirm("issuer", "holder:alice@example.org", bytes(16)),
    Confirmed(bytes(16)),
    OrderSubmission(ENVELOPE),
    OrderOutcome(ORDER_ID, OutcomeStatus.COMPLETED, "approved and shipped", amount=4900,
                 tracking="TRK-1", issuer_receipt=b"r1", delivery_receipt=b"r2"),
    StatusQuery(ORDER_ID),
    Authorise(HEADER, BOX, bytes(33)),
    Authorisation("approved", "approved", 4900, bytes(32), bytes(33), b"receipt"),
    Reverse(HEADER, bytes(32), "not completed in time", bytes(33)),
    Reversed("reversed", 4900, bytes(33), b"receipt"),
    Deliver(HEADER, BOX, bytes(33), approval=bytes(33)),
    Delivery("TRK-1", bytes(33), b"receipt"),
    ErrorMessage("replay", "order 00 was already seen"),
    Hello("issuer", "seller:shop.example", bytes(32)),
    HelloAck(bytes(32), bytes(16)),
    HelloDone(bytes(16)),
    SessionFrame(0, b"\xa0", bytes(16)),
)}


def body(message: Message) -> bytes:
    return message.to_frame()[LENGTH.size:]


def test_there_is_one_class_per_message_type() -> None:
    assert set(EXAMPLES) == set(MessageType) == set(messages.CLASSES)


@pytest.mark.parametrize("kind", list(MessageType))
def test_each_message_round_trips(kind: MessageType) -> None:
    message = EXAMPLES[kind]
    assert messages.parse(body(message)) == message
    assert type(messages.parse(body(message))) is type(message)


@pytest.mark.parametrize("kind", list(MessageType))
def test_each_message_encodes_as_the_untyped_frame_did(kind: MessageType) -> None:
    """The bytes on the wire are those of `frame(type, **fields)`: what every party sent
    before messages were typed, so recorded answers and old peers still agree."""
    message = EXAMPLES[kind]
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    if kind is MessageType.ORDER:
        fields["envelope"] = ENVELOPE.to_cbor()
    assert message.to_frame() == frame(kind, **fields)


def test_an_outcome_leaves_out_what_is_not_known() -> None:
    pending = OrderOutcome(ORDER_ID, OutcomeStatus.PENDING, "being processed")
    assert codec.decode(body(pending)) == {"type": "outcome", "order": ORDER_ID,
                                           "status": "pending", "reason": "being processed"}
    assert not pending.final and EXAMPLES[MessageType.OUTCOME].final


def test_an_unknown_type_is_unknown_type() -> None:
    with pytest.raises(WireError) as info:
        messages.parse(codec.encode({"type": "launch-missiles"}))
    assert info.value.code is ErrorCode.UNKNOWN_TYPE


def fields_of(kind: MessageType) -> list[str]:
    return [f.name for f in dataclasses.fields(EXAMPLES[kind])
            if f.default is dataclasses.MISSING]


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in MessageType for n in fields_of(k)])
def test_every_required_field_missing_or_mistyped_is_malformed(kind: MessageType,
                                                              name: str) -> None:
    fields = codec.decode(body(EXAMPLES[kind]))
    missing = {k: v for k, v in fields.items() if k != name}
    mistyped = {**fields, name: True}  # a bool is no field's type, not even an int's
    for bad in (missing, mistyped):
        with pytest.raises(WireError) as info:
            messages.parse(codec.encode(bad))
        assert info.value.code is ErrorCode.MALFORMED
        assert repr(name) in str(info.value)


# (type, field, a value just out of bounds): each bound the handlers used to repeat
OUT_OF_BOUNDS = [
    (MessageType.FORM_REQUEST, "holder", ""),
    (MessageType.FORM_REQUEST, "holder", "h" * 65),
    (MessageType.FORM_REQUEST, "nonce", bytes(15)),
    (MessageType.FORM_REQUEST, "nonce", bytes(17)),
    (MessageType.FORM, "form", bytes(messages.MAX_FORM + 1)),
    (MessageType.FORM, "mac", bytes(65)),
    (MessageType.CONFIRM, "party", "p" * 17),
    (MessageType.CONFIRM, "peer", ""),
    (MessageType.CONFIRM, "challenge", bytes(7)),
    (MessageType.CONFIRM, "challenge", bytes(65)),
    (MessageType.CONFIRMED, "response", bytes(65)),
    (MessageType.OUTCOME, "order", bytes(17)),
    (MessageType.OUTCOME, "status", "shipped"),
    (MessageType.OUTCOME, "reason", "r" * 1001),
    (MessageType.OUTCOME, "tracking", "t" * 65),
    (MessageType.OUTCOME, "issuer_receipt", bytes(1025)),
    (MessageType.OUTCOME, "amount", "4900"),
    (MessageType.STATUS, "order", bytes(15)),
    (MessageType.AUTHORISE, "header", bytes(1025)),
    (MessageType.AUTHORISE, "part", bytes(MAX_PART + 1)),
    (MessageType.AUTHORISATION, "code", "c" * 17),
    (MessageType.AUTHORISATION, "reason", "r" * 501),
    (MessageType.AUTHORISATION, "receipt", bytes(1025)),
    (MessageType.REVERSE, "digest", bytes(31)),
    (MessageType.REVERSE, "reason", "r" * 501),
    (MessageType.REVERSED, "mac", bytes(65)),
    (MessageType.DELIVER, "approval", bytes(65)),
    (MessageType.DELIVERY, "tracking", "t" * 65),
    (MessageType.ERROR, "code", "c" * 65),
    (MessageType.ERROR, "message", "m" * 1001),
]


@pytest.mark.parametrize(("kind", "name", "value"), OUT_OF_BOUNDS)
def test_each_bound_is_refused_as_malformed(kind: MessageType, name: str,
                                            value: object) -> None:
    fields = {**codec.decode(body(EXAMPLES[kind])), name: value}
    with pytest.raises(WireError) as info:
        messages.parse(codec.encode(fields))
    assert info.value.code is ErrorCode.MALFORMED


def test_an_envelope_with_a_part_missing_is_malformed_but_not_a_wire_error() -> None:
    """As before messages were typed: the seller says so and keeps the connection."""
    cbor = ENVELOPE.to_cbor()
    del cbor["parts"]["delivery"]
    with pytest.raises(EnvelopeError) as info:
        messages.parse(codec.encode({"type": "order", "envelope": cbor}))
    assert info.value.code is ErrorCode.MALFORMED and not isinstance(info.value, WireError)


def test_expect_gives_the_answer_the_peers_refusal_or_unexpected() -> None:
    outcome = EXAMPLES[MessageType.OUTCOME]
    assert expect(outcome, OrderOutcome) is outcome
    with pytest.raises(PeerRefused) as refused:
        expect(EXAMPLES[MessageType.ERROR], OrderOutcome)
    assert refused.value.code is ErrorCode.REPLAY
    with pytest.raises(WireError) as unexpected:
        expect(outcome, Form)
    assert unexpected.value.code is ErrorCode.UNEXPECTED


# -- the error vocabulary -----------------------------------------------------------------------


def test_a_code_this_version_does_not_know_is_unknown_and_kept_verbatim() -> None:
    assert ErrorCode.parse("frobnicated") is ErrorCode.UNKNOWN
    assert ErrorCode.parse("replay") is ErrorCode.REPLAY
    refusal = messages.parse(body(ErrorMessage("frobnicated", "a newer peer's reason")))
    with pytest.raises(PeerRefused) as info:
        expect(refusal, OrderOutcome)
    exc = info.value
    assert exc.code is ErrorCode.UNKNOWN and exc.said == "frobnicated"
    assert str(exc) == "frobnicated: a newer peer's reason"
    # relayed, it goes on as the peer said it
    assert codec.decode(error_frame(exc)[LENGTH.size:])["code"] == "frobnicated"


def test_the_peers_refusal_and_ours_are_different_classes_with_one_code() -> None:
    ours = Refused(ErrorCode.FORGED, "the MAC does not verify")
    theirs = ErrorMessage.of(ours).refusal()
    assert isinstance(ours, TransactionError) and isinstance(theirs, TransactionError)
    assert not isinstance(ours, PeerRefused) and not isinstance(theirs, Refused)
    assert theirs.code is ours.code is ErrorCode.FORGED
    assert str(theirs) == str(ours) == "forged: the MAC does not verify"
    assert isinstance(WireError("x"), Refused) and isinstance(EnvelopeError("forged", "x"),
                                                              Refused)


def test_codes_are_enum_members_and_a_mistyped_code_is_a_bug() -> None:
    assert TransactionError("replay", "seen").code is ErrorCode.REPLAY
    with pytest.raises(ValueError):
        Refused("replayed", "seen")  # type: ignore[arg-type]


def test_the_protocol_documents_every_error_code() -> None:
    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    table = text[text.index("| code | sent by |"):text.index("Declines are not errors")]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = {code for cell in first_cells for code in re.findall(r"`([a-z-]+)`", cell)}
    assert documented == {code.value for code in ErrorCode}


# -- pricing and the typed parts ----------------------------------------------------------------

FORM = form()


def test_the_form_prices_lines_for_the_holder_and_the_seller_alike() -> None:
    assert FORM.price([("A-100", 1), ("B-200", 2)]) == 2500 + 2 * 1200
    assert order().amount(FORM) == FORM.price(order().lines)
    with pytest.raises(OrderError, match="not in"):
        FORM.price([("Z-999", 1)])


def seller_fields(**overrides: object) -> dict[str, object]:
    fields = envelope.split(order(), FORM)[Party.SELLER]
    return {**fields, **overrides}


def header_for(the_form: OrderForm) -> Header:
    return envelope.new_header(the_form, "holder:alice@example.org", order_id=ORDER_ID,
                               timestamp=1_790_000_000)


def test_a_seller_part_reads_as_items_priced_by_the_form() -> None:
    part = SellerPart.read(FORM, header_for(FORM), seller_fields())
    assert part.amount == order().amount(FORM)
    assert [(line.number, line.quantity) for line in part.items] == list(order().lines)
    assert part.names == {f.value for f in FORM.policy.fields_for(Party.SELLER)}


@pytest.mark.parametrize(("fields", "code"), [
    (seller_fields(items=[["A-100", "smart card reader", 0]]), ErrorCode.MALFORMED),
    (seller_fields(items=[["A-100", "smart card reader", 1001]]), ErrorCode.MALFORMED),
    (seller_fields(items=[["A-100", "smart card reader", True]]), ErrorCode.MALFORMED),
    (seller_fields(items=[]), ErrorCode.MALFORMED),
    (seller_fields(amount="4900"), ErrorCode.MALFORMED),
    (seller_fields(items=[["Z-999", "nothing", 1]]), ErrorCode.UNKNOWN_ITEM),
    (seller_fields(amount=1), ErrorCode.AMOUNT),
    (seller_fields(card_number="4000123412341234"), ErrorCode.POLICY),
    ({k: v for k, v in seller_fields().items() if k != "items"}, ErrorCode.POLICY),
])
def test_a_seller_part_off_the_form_is_refused_with_its_code(fields: dict[str, object],
                                                            code: ErrorCode) -> None:
    with pytest.raises(EnvelopeError) as info:
        SellerPart.read(FORM, header_for(FORM), fields)
    assert info.value.code is code


def test_a_seller_part_made_on_another_form_is_wrong_form() -> None:
    other = form(catalogue=(CatalogueItem("A-100", "smart card reader", 2500),),
                 currency="USD")
    with pytest.raises(EnvelopeError) as info:
        SellerPart.read(FORM, header_for(other), seller_fields())
    assert info.value.code is ErrorCode.WRONG_FORM


def test_a_card_manager_part_is_never_refused_only_unusable() -> None:
    """A part without a usable amount or card number is the card manager's decline to give,
    not a wire error: the seller can show the holder a declined authorisation."""
    good = envelope.split(order(), FORM)[Party.ISSUER]
    part = IssuerPart.read(header_for(FORM), good)
    assert part.usable and part.amount == order().amount(FORM)
    assert part.card_number == order().card_number and part.names == set(good)
    for bad in ({**good, "amount": "4900"}, {**good, "amount": True},
                {k: v for k, v in good.items() if k != "card_number"}, {**good, "card_number": 4}):
        assert not IssuerPart.read(header_for(FORM), bad).usable
    assert IssuerPart.read(header_for(FORM), {**good, "card_expiry": 9}).card_expiry is None


def test_a_delivery_part_needs_a_destination() -> None:
    good = envelope.split(order(), FORM)[Party.DELIVERY]
    part = DeliveryPart.read(header_for(FORM), good)
    assert (part.destination, part.recipient) == (order().destination, order().holder_name)
    for bad in ({**good, "destination": "  "}, {**good, "destination": 5},
                {k: v for k, v in good.items() if k != OrderField.DESTINATION.value},
                {**good, "holder_name": 5}):
        with pytest.raises(EnvelopeError) as info:
            DeliveryPart.read(header_for(FORM), bad)
        assert info.value.code is ErrorCode.MALFORMED


# -- the header, parsed once per request ----------------------------------------------------------


def test_a_purchase_parses_each_partys_header_once(
        market: Market, holder_card: CardSession, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each parse re-encodes the header to check it is canonical: the seller, the card
    manager and the delivery company each do it once per order, not per step."""
    client = client_for(market, holder_card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        _form, sealed = client.prepare(conn, order())
        parses: list[bytes] = []
        original = Header.from_bytes.__func__  # type: ignore[attr-defined]

        def counting(cls: type[Header], raw: bytes) -> Header:
            parses.append(raw)
            return original(cls, raw)  # type: ignore[no-any-return]

        monkeypatch.setattr(Header, "from_bytes", classmethod(counting))
        outcome: Outcome = client.send(conn, sealed)
    assert outcome.approved, outcome.reason
    assert parses == 3 * [sealed.envelope.header]


# -- a message map's encoding: the deterministic bytes, by the cheaper path -----------------

_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                  st.text(max_size=40), st.binary(max_size=40))
_ANY = st.one_of(_LEAF, st.floats(), st.lists(_LEAF, max_size=3),
                 st.dictionaries(st.text(max_size=5), _LEAF, max_size=3))


@settings(max_examples=500)
@given(st.dictionaries(st.text(max_size=40), _ANY, max_size=10))
def test_a_message_map_encodes_to_the_deterministic_bytes(body: dict[str, object]) -> None:
    """codec.encode_map orders a flat map's keys itself and skips cbor2's canonical mode;
    whatever the keys (any length, any script) and values, the bytes are encode()'s."""
    assert codec.encode_map(dict(body)) == codec.encode(body)
