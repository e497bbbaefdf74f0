"""Fuzz harness for the wire protocol (host/protocol/wire.py, messages.py): the frame decoder,
message parsing, the typed messages every handler takes, and the field access they are built
on (host/protocol/codec.py's `Fields`).

Input layout: byte 0 is a chunk size (1 + its value) for feeding the rest to the decoder, as
a stream that arrives in pieces; byte 1 chooses the frame limit (b0: 64 bytes instead of
MAX_FRAME, so the too-large path is reached cheaply); the rest is the byte stream.

Declared errors: `WireError` from the decoder, `RawMessage.parse`, `Fields` and
`messages.parse`, and the `EnvelopeError` an `order` message's envelope may raise; from
`raise_if_error` (an `error` message) and `expect`, the `TransactionError` they exist to
raise. Invariants (a violation raises `Finding`):
- nothing else escapes;
- the stream fed in chunks gives the same frames, and the same error, as fed whole (but
  for the frames read together with a bad frame header, which the error drops);
- a message that parses re-encodes with `frame` into a frame that parses to the same body
  (what a party relays is what it received);
- every field of a parsed message reads as its own type, and as any other type only by
  raising `WireError`;
- a typed message that parses encodes (`to_frame`) into a frame that parses to the same
  typed message.
"""

from __future__ import annotations

import contextlib
from typing import Any

from host.errors import TransactionError, WireError
from host.protocol import codec, messages
from host.protocol.codec import Fields
from host.protocol.messages import ErrorMessage, OrderOutcome, expect
from host.protocol.wire import LENGTH, MAX_FRAME, FrameDecoder, MessageType, RawMessage, frame

KINDS: tuple[type, ...] = (str, bytes, int, bool, dict, list)


class Finding(AssertionError):
    """An input that breaks an invariant."""


def decode_stream(stream: bytes, chunk: int, limit: int) -> tuple[list[bytes], str | None]:
    decoder = FrameDecoder(limit)
    frames: list[bytes] = []
    try:
        for at in range(0, len(stream), chunk):
            frames += decoder.feed(stream[at : at + chunk])
    except WireError as exc:
        return frames, exc.code
    return frames, None


def check_fields(body: Fields) -> None:
    for key, value in body.map.items():
        own = type(value)
        for kind in KINDS:
            try:
                got = body.get(key, kind, min_size=1, max_size=64)
            except WireError:
                continue
            if not isinstance(got, kind) or (kind is int and own is bool):
                raise Finding(f"field {key!r} ({own.__name__}) read as {kind.__name__}")
        if isinstance(value, dict):
            check_fields(body.sub(key))


def check_message(raw: bytes) -> None:
    try:
        message = RawMessage.parse(raw)
    except WireError:
        return
    rest: dict[str, Any] = {k: v for k, v in message.body.map.items() if k != "type"}
    try:
        again = frame(message.type, **rest)
    except WireError as exc:
        raise Finding(f"a parsed {message.type} message does not re-encode: {exc}") from exc
    reparsed = RawMessage.parse(again[LENGTH.size :])
    if reparsed.type is not message.type or reparsed.body.map != message.body.map:
        raise Finding(f"{message.type} changed on re-encoding")
    check_fields(message.body)
    check_typed(raw)


def check_typed(raw: bytes) -> None:
    try:
        typed = messages.parse(raw)
    except TransactionError:
        return
    try:
        again = messages.parse(typed.to_frame()[LENGTH.size :])
    except TransactionError as exc:
        raise Finding(f"a parsed {typed.TYPE} message does not parse again: {exc}") from exc
    if again != typed:
        raise Finding(f"{typed.TYPE} changed on its way through to_frame")
    for kind in (ErrorMessage, OrderOutcome):
        with contextlib.suppress(TransactionError):
            expect(typed, kind)


def run_one(data: bytes) -> None:
    if len(data) < 2:
        return
    chunk, limit = data[0] + 1, 64 if data[1] & 1 else MAX_FRAME
    stream = data[2:]
    whole = decode_stream(stream, max(len(stream), 1), limit)
    pieces = decode_stream(stream, chunk, limit)
    # a bad frame header drops the good frames of the same read with it (the connection is
    # closed on it anyway): the frames agree up to the shorter list, the error is the same
    shorter = min(len(whole[0]), len(pieces[0]))
    if whole[1] != pieces[1] or whole[0][:shorter] != pieces[0][:shorter] or (
            whole[1] is None and whole[0] != pieces[0]):
        raise Finding(f"chunks of {chunk} decode differently from the whole stream")
    for raw in pieces[0]:
        check_message(raw)


def _frame(kind: MessageType, **body: Any) -> bytes:
    return frame(kind, **body)


def seeds() -> dict[str, bytes]:
    order = bytes(range(16))
    return {
        "form-request": b"\x07\x00" + _frame(MessageType.FORM_REQUEST),
        "confirm": b"\x02\x00" + _frame(MessageType.CONFIRM, peer="seller:shop.example",
                                         challenge=bytes(16), party="seller"),
        "error": b"\xff\x00" + _frame(MessageType.ERROR, code="replay", message="seen"),
        "two-frames": b"\x03\x00" + _frame(MessageType.STATUS, order=order)
        + _frame(MessageType.OUTCOME, order=order, status="completed", reason=""),
        "nested": b"\x10\x00" + _frame(MessageType.ORDER, envelope={
            "header": b"h", "parts": {"seller": bytes(40), "issuer": b"", "delivery": [1, -2]}},
            flag=True, none=None),
        "unknown-type": b"\x00\x00" + LENGTH.pack(11) + codec.encode({"type": "nope"}),
        "too-large": b"\x00\x01" + LENGTH.pack(65) + bytes(65),
        "not-cbor": b"\x01\x00" + LENGTH.pack(3) + b"\xff\xff\xff",
        "truncated": b"\x00\x00" + _frame(MessageType.FORM_REQUEST)[:-1],
    }
