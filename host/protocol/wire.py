"""The wire protocol between the parties (docs/protocol.md, "Wire").

A frame is a 4-byte big-endian length and that many bytes of CBOR: a map whose "type" names
the message. Frames above the maximum size are refused from their length alone, before any
byte of the body is buffered. A peer that sends something malformed gets one `error` message
saying what, and the connection is closed.

This module is sans-IO (bytes in, frames out). A frame's typed message is
host.protocol.messages; the connections that carry the frames, with their timeouts, are
host.parties.connection.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

from host.errors import ErrorCode, WireError
from host.protocol import codec
from host.protocol.codec import Fields

LENGTH = struct.Struct(">I")
MAX_FRAME = 256 * 1024


class MessageType(enum.StrEnum):
    FORM_REQUEST = "form-request"  # holder -> seller
    FORM = "form"
    CONFIRM = "confirm"  # anyone -> party: answer this challenge (claim 7)
    CONFIRMED = "confirmed"
    ORDER = "order"  # holder -> seller: the envelope
    OUTCOME = "outcome"
    STATUS = "status"  # holder -> seller: the outcome of an order already sent
    AUTHORISE = "authorise"  # seller -> issuer
    AUTHORISATION = "authorisation"
    REVERSE = "reverse"  # seller -> issuer: cancel any charge for an order that cannot complete
    REVERSED = "reversed"
    DELIVER = "deliver"  # seller -> delivery
    DELIVERY = "delivery"
    ERROR = "error"
    # a session between two parties (docs/protocol.md, "Sessions")
    HELLO = "hello"  # initiator -> responder: its identifier and nonce
    HELLO_ACK = "hello-ack"  # the responder's nonce and proof
    HELLO_DONE = "hello-done"  # the initiator's proof
    FRAME = "frame"  # every frame after the handshake: sequence number and MAC around it


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A frame's type and its fields, not yet checked: what a server dispatches on before
    the handler's message class parses the rest (host.protocol.messages)."""

    type: MessageType
    body: Fields = field(compare=False)

    @classmethod
    def parse(cls, frame: bytes) -> RawMessage:
        body = Fields(codec.decode(frame), "message")
        name = body.map.get("type")
        kind = _TYPES.get(name) if type(name) is str and len(name) <= 32 else None
        if kind is None:
            name = body.get("type", str, max_size=32)  # raises what is wrong with it
            raise WireError(f"unknown message type {name!r}", code=ErrorCode.UNKNOWN_TYPE)
        body.what = name
        return cls(kind, body)


#: every type by its name: a dict lookup, where MessageType(name) costs an enum call
_TYPES: dict[str, MessageType] = {kind.value: kind for kind in MessageType}


def frame(kind: MessageType, **body: Any) -> bytes:
    return frame_of(kind, body)


def frame_of(kind: MessageType, body: dict[str, Any]) -> bytes:
    """`frame` of a body already in a dict (which gains its "type")."""
    body["type"] = kind.value
    payload = codec.encode_map(body)
    if len(payload) > MAX_FRAME:
        raise WireError(f"{kind} message of {len(payload)} bytes exceeds {MAX_FRAME}",
                        code=ErrorCode.TOO_LARGE)
    return LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Bytes in, whole frames out."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        if not self._buffer and len(data) >= LENGTH.size:
            # the common case, one whole frame in one read: no copy through the buffer
            (length,) = LENGTH.unpack_from(data)
            if len(data) == LENGTH.size + length and length <= self.max_frame:
                return [data[LENGTH.size:]]
        self._buffer += data
        frames = []
        while len(self._buffer) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self._buffer)
            if length > self.max_frame:
                raise WireError(f"frame of {length} bytes exceeds the maximum {self.max_frame}",
                                code=ErrorCode.TOO_LARGE)
            if len(self._buffer) < LENGTH.size + length:
                break
            frames.append(bytes(self._buffer[LENGTH.size:LENGTH.size + length]))
            del self._buffer[:LENGTH.size + length]
        return frames

    @property
    def mid_frame(self) -> bool:
        return bool(self._buffer)

