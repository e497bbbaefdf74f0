"""The wire's messages as typed values (docs/protocol.md, "Wire"), as h11's events: one frozen
dataclass per `MessageType`, owning its fields' bounds and its encoding.

`parse(frame)` turns a frame's bytes into the one typed message it carries, or raises the
`WireError` a peer is told (`malformed` for a missing, mistyped or out-of-range field,
`unknown-type` for a type no party takes); `message.to_frame()` is the frame's bytes. A
handler therefore receives a `Confirm` or an `Authorise`, never a map to pick fields from.

Pure: no asyncio, socket or sqlite. The connections that carry messages are
host.parties.connection.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar

from host.errors import ErrorCode, PeerRefused, TransactionError, WireError
from host.protocol.codec import Fields
from host.protocol.envelope import DIGEST_SIZE, FORM_NONCE_SIZE, MAX_PART, ORDER_ID_SIZE, Envelope
from host.protocol.wire import MAX_FRAME, MessageType, RawMessage, frame_of

MAX_IDENTIFIER = 64  # a party's identifier (the card holds at most this many bytes)
MAX_MAC = 64  # a MAC or a confirmation answer
MAX_HEADER = 1024
MAX_RECEIPT = 1024
MAX_REASON = 500
MAX_FORM = 200 * 1024  # a form of 1,000 catalogue entries fits in one frame
MIN_CHALLENGE, MAX_CHALLENGE = 8, 64  # the card's INTERNAL AUTHENTICATE bounds


def _wire(kind: type, *, min_size: int = 0, max_size: int | None = None,
          optional: bool = False) -> Any:
    """A message field: its CBOR type and size bounds, checked when it is parsed."""
    return field(default=None if optional else MISSING,
                 metadata={"kind": kind, "min": min_size, "max": max_size, "optional": optional})


@dataclass(frozen=True, slots=True)
class _Spec:
    """One field of a message class, read once from its dataclass field: what `from_fields`
    and `to_cbor` walk, instead of `dataclasses.fields` and its metadata per message."""

    name: str
    kind: type
    min: int
    max: int | None
    optional: bool
    sized: bool  # bytes, text, array or map: a size to check


_SIZED = (bytes, str, list, dict)


class _Message:
    """Encoding and parsing from each dataclass field's declared kind and bounds; a class
    whose fields are not plain CBOR values overrides `_decode` / `_encode` for them."""

    __slots__ = ()
    TYPE: ClassVar[MessageType]
    #: the class's fields as `_Spec`s, built on first use (the dataclass decorator runs
    #: after __init_subclass__, so its fields are not known any earlier)
    _SPECS: ClassVar[tuple[_Spec, ...]]
    #: whether the class overrides `_encode` / `_decode` (most do not: no call per field)
    _CUSTOM_ENCODE: ClassVar[bool]
    _CUSTOM_DECODE: ClassVar[bool]

    @classmethod
    def _specs(cls) -> tuple[_Spec, ...]:
        specs = cls.__dict__.get("_SPECS")
        if specs is None:
            specs = tuple(_Spec(f.name, f.metadata["kind"], f.metadata["min"], f.metadata["max"],
                                f.metadata["optional"], issubclass(f.metadata["kind"], _SIZED))
                          for f in fields(cls))  # type: ignore[arg-type]
            own_decode = cls._decode.__func__  # type: ignore[attr-defined]
            base_decode = _Message._decode.__func__  # type: ignore[attr-defined]
            cls._CUSTOM_ENCODE = cls._encode is not _Message._encode
            cls._CUSTOM_DECODE = own_decode is not base_decode
            cls._SPECS = specs  # last: a thread that finds it finds the flags set
        return specs

    def to_frame(self) -> bytes:
        return frame_of(self.TYPE, self.to_cbor())

    def to_cbor(self) -> dict[str, object]:
        """The message's fields, as its frame carries them (without `type`)."""
        specs = self._specs()
        body = {}
        custom = self._CUSTOM_ENCODE
        for spec in specs:
            value = getattr(self, spec.name)
            if value is not None or not spec.optional:
                body[spec.name] = self._encode(spec.name, value) if custom else value
        return body

    def _encode(self, name: str, value: Any) -> object:
        return value

    @classmethod
    def from_cbor(cls, value: object) -> Self:
        """The message whose `to_cbor` is `value` (a recorded one, say)."""
        return cls.from_fields(Fields(value, cls.TYPE.value))

    @classmethod
    def from_fields(cls, body: Fields) -> Self:
        specs = cls._specs()
        custom = cls._CUSTOM_DECODE
        found = body.map
        values = []
        for spec in specs:
            raw = found.get(spec.name, _ABSENT)
            # the common case settled here: present, of exactly its kind, within its bounds;
            # anything else goes through Fields.get, which accepts it or says what is wrong
            if type(raw) is not spec.kind or (spec.sized and (
                    len(raw) < spec.min or (spec.max is not None and len(raw) > spec.max))):
                raw = body.get(spec.name, spec.kind, min_size=spec.min, max_size=spec.max,
                               optional=spec.optional)
            if custom and raw is not None:
                raw = cls._decode(spec.name, raw)
            values.append(raw)
        return cls(*values)

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        return value


_ABSENT = object()


@dataclass(frozen=True, slots=True)
class FormRequest(_Message):
    """holder -> seller: the form, MACed for this holder over this nonce (section 3.1)."""

    TYPE: ClassVar[MessageType] = MessageType.FORM_REQUEST
    holder: str = _wire(str, min_size=1, max_size=MAX_IDENTIFIER)
    nonce: bytes = _wire(bytes, min_size=FORM_NONCE_SIZE, max_size=FORM_NONCE_SIZE)


@dataclass(frozen=True, slots=True)
class Form(_Message):
    TYPE: ClassVar[MessageType] = MessageType.FORM
    form: bytes = _wire(bytes, max_size=MAX_FORM)  # the exact bytes the MAC covers
    mac: bytes = _wire(bytes, max_size=MAX_MAC)


@dataclass(frozen=True, slots=True)
class Confirm(_Message):
    """anyone -> party: answer this challenge (claim 7). `party` is the role asked, kept as
    text: a role nobody plays here is the handler's `wrong-party`, not a malformed frame."""

    TYPE: ClassVar[MessageType] = MessageType.CONFIRM
    party: str = _wire(str, max_size=16)
    peer: str = _wire(str, min_size=1, max_size=MAX_IDENTIFIER)
    challenge: bytes = _wire(bytes, min_size=MIN_CHALLENGE, max_size=MAX_CHALLENGE)


@dataclass(frozen=True, slots=True)
class Confirmed(_Message):
    TYPE: ClassVar[MessageType] = MessageType.CONFIRMED
    response: bytes = _wire(bytes, max_size=MAX_MAC)


@dataclass(frozen=True, slots=True)
class OrderSubmission(_Message):
    """holder -> seller: the sealed envelope."""

    TYPE: ClassVar[MessageType] = MessageType.ORDER
    envelope: Envelope = _wire(dict)  # noqa: RUF009 (a field spec, not a shared default)

    def _encode(self, name: str, value: Any) -> object:
        return value.to_cbor()

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        return Envelope.from_cbor(value)


class OutcomeStatus(enum.StrEnum):
    COMPLETED = "completed"
    DECLINED = "declined"
    FAILED = "failed"  # and, when the card manager's receipt says so, no charge stands
    PENDING = "pending"  # the seller is still driving the order: ask again with `status`


@dataclass(frozen=True, slots=True)
class OrderOutcome(_Message):
    """seller -> holder: what became of an order. The receipts are the card manager's and
    the delivery company's word, sealed for the holder's card; the rest is the seller's."""

    TYPE: ClassVar[MessageType] = MessageType.OUTCOME
    order: bytes = _wire(bytes, max_size=ORDER_ID_SIZE)
    status: OutcomeStatus = _wire(str, max_size=16)  # noqa: RUF009 (as above)
    reason: str = _wire(str, max_size=1000)
    amount: int | None = _wire(int, optional=True)
    tracking: str | None = _wire(str, max_size=64, optional=True)
    issuer_receipt: bytes | None = _wire(bytes, max_size=MAX_RECEIPT, optional=True)
    delivery_receipt: bytes | None = _wire(bytes, max_size=MAX_RECEIPT, optional=True)

    @property
    def final(self) -> bool:
        return self.status is not OutcomeStatus.PENDING

    def _encode(self, name: str, value: Any) -> object:
        return value.value if name == "status" else value

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name != "status":
            return value
        try:
            return OutcomeStatus(value)
        except ValueError:
            raise WireError(f"outcome: unknown order status {value!r}") from None


@dataclass(frozen=True, slots=True)
class StatusQuery(_Message):
    """holder -> seller: the outcome of an order already sent."""

    TYPE: ClassVar[MessageType] = MessageType.STATUS
    order: bytes = _wire(bytes, min_size=ORDER_ID_SIZE, max_size=ORDER_ID_SIZE)


@dataclass(frozen=True, slots=True)
class Forwarded(_Message):
    """A party's part, forwarded by the seller under its request MAC (section 7)."""

    header: bytes = _wire(bytes, max_size=MAX_HEADER)
    part: bytes = _wire(bytes, max_size=MAX_PART)
    mac: bytes = _wire(bytes, max_size=MAX_MAC)


@dataclass(frozen=True, slots=True)
class Authorise(Forwarded):
    """seller -> card manager: its part."""

    TYPE: ClassVar[MessageType] = MessageType.AUTHORISE


@dataclass(frozen=True, slots=True)
class Authorisation(_Message):
    TYPE: ClassVar[MessageType] = MessageType.AUTHORISATION
    code: str = _wire(str, max_size=16)  # approved | declined
    reason: str = _wire(str, max_size=MAX_REASON)
    amount: int = _wire(int)
    digest: bytes = _wire(bytes, max_size=DIGEST_SIZE)
    mac: bytes = _wire(bytes, max_size=MAX_MAC)
    receipt: bytes = _wire(bytes, max_size=MAX_RECEIPT)

    @property
    def approved(self) -> bool:
        return self.code == "approved"


@dataclass(frozen=True, slots=True)
class Reverse(_Message):
    """seller -> card manager: cancel any charge for an order that cannot complete."""

    TYPE: ClassVar[MessageType] = MessageType.REVERSE
    header: bytes = _wire(bytes, max_size=MAX_HEADER)
    digest: bytes = _wire(bytes, min_size=DIGEST_SIZE, max_size=DIGEST_SIZE)
    reason: str = _wire(str, max_size=MAX_REASON)
    mac: bytes = _wire(bytes, max_size=MAX_MAC)


@dataclass(frozen=True, slots=True)
class Reversed(_Message):
    TYPE: ClassVar[MessageType] = MessageType.REVERSED
    code: str = _wire(str, max_size=16)  # reversed | voided | declined
    amount: int = _wire(int)
    mac: bytes = _wire(bytes, max_size=MAX_MAC)
    receipt: bytes = _wire(bytes, max_size=MAX_RECEIPT)


@dataclass(frozen=True, slots=True)
class Deliver(Forwarded):
    """seller -> delivery company: its part and the card manager's approval MAC, which the
    seller's request MAC covers too."""

    TYPE: ClassVar[MessageType] = MessageType.DELIVER
    approval: bytes = _wire(bytes, max_size=MAX_MAC)


@dataclass(frozen=True, slots=True)
class Delivery(_Message):
    TYPE: ClassVar[MessageType] = MessageType.DELIVERY
    tracking: str = _wire(str, max_size=64)
    mac: bytes = _wire(bytes, max_size=MAX_MAC)
    receipt: bytes = _wire(bytes, max_size=MAX_RECEIPT)


@dataclass(frozen=True, slots=True)
class ErrorMessage(_Message):
    """A refusal, from any party. `code` is the text as sent: a code this version does not
    know is kept for the message (and mapped to ErrorCode.UNKNOWN by `refusal`)."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: str = _wire(str, max_size=64)
    message: str = _wire(str, max_size=1000)

    @classmethod
    def of(cls, exc: TransactionError) -> ErrorMessage:
        return cls(exc.said, exc.reason[:MAX_REASON])

    def refusal(self) -> PeerRefused:
        return PeerRefused(self.code, self.message)


# -- a session between two parties (docs/protocol.md, "Sessions"; host.protocol.session) ------

SESSION_NONCE = 32
SESSION_PROOF = 16
FRAME_MAC = 16


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    """initiator -> responder: open a session. `party` is the role asked (as in `confirm`),
    `peer` the initiator's identifier, `nonce` its fresh contribution."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    party: str = _wire(str, max_size=16)
    peer: str = _wire(str, min_size=1, max_size=MAX_IDENTIFIER)
    nonce: bytes = _wire(bytes, min_size=SESSION_NONCE, max_size=SESSION_NONCE)


@dataclass(frozen=True, slots=True)
class HelloAck(_Message):
    """responder -> initiator: its nonce, and its proof over both nonces."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO_ACK
    nonce: bytes = _wire(bytes, min_size=SESSION_NONCE, max_size=SESSION_NONCE)
    proof: bytes = _wire(bytes, min_size=SESSION_PROOF, max_size=SESSION_PROOF)


@dataclass(frozen=True, slots=True)
class HelloDone(_Message):
    """initiator -> responder: its proof over both nonces; the session is open."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO_DONE
    proof: bytes = _wire(bytes, min_size=SESSION_PROOF, max_size=SESSION_PROOF)


@dataclass(frozen=True, slots=True)
class SessionFrame(_Message):
    """Any frame after the handshake, either way: `body` is the carried frame's CBOR (its
    length prefix dropped), `seq` its number in this direction, `mac` over both."""

    TYPE: ClassVar[MessageType] = MessageType.FRAME
    seq: int = _wire(int)
    body: bytes = _wire(bytes, max_size=MAX_FRAME - 64)
    mac: bytes = _wire(bytes, min_size=FRAME_MAC, max_size=FRAME_MAC)


Message = (FormRequest | Form | Confirm | Confirmed | OrderSubmission | OrderOutcome
           | StatusQuery | Authorise | Authorisation | Reverse | Reversed | Deliver | Delivery
           | ErrorMessage | Hello | HelloAck | HelloDone | SessionFrame)

CLASSES: dict[MessageType, type[Message]] = {cls.TYPE: cls for cls in (
    FormRequest, Form, Confirm, Confirmed, OrderSubmission, OrderOutcome, StatusQuery,
    Authorise, Authorisation, Reverse, Reversed, Deliver, Delivery, ErrorMessage,
    Hello, HelloAck, HelloDone, SessionFrame)}


for _cls in CLASSES.values():  # every table built at import, before any thread uses one
    _cls._specs()


def from_raw(raw: RawMessage) -> Message:
    """The typed message of a frame whose type is already known."""
    message: Message = CLASSES[raw.type].from_fields(raw.body)
    return message


def parse(data: bytes) -> Message:
    """A frame's bytes (without the length prefix) as its typed message."""
    return from_raw(RawMessage.parse(data))


def error_frame(exc: TransactionError) -> bytes:
    return ErrorMessage.of(exc).to_frame()


M = TypeVar("M", bound=Message)


def raise_if_error(message: M) -> M:
    if isinstance(message, ErrorMessage):
        raise message.refusal()
    return message


def expect(message: Message, kind: type[M]) -> M:
    """`message` if it is a `kind`; the peer's refusal if it sent one; else `unexpected`."""
    raise_if_error(message)
    if not isinstance(message, kind):
        raise WireError(f"expected {kind.TYPE}, got {message.TYPE}", code=ErrorCode.UNEXPECTED)
    return message
