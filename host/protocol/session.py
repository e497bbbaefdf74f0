"""A session between two parties: confirmed once per connection, every later frame
authenticated (docs/protocol.md, "Sessions").

Theory of operation. The seller opens a connection to the card manager or the delivery
company and runs a three-message handshake: `hello` (its identifier and a 32-byte nonce),
`hello-ack` (the responder's nonce and its proof over both nonces), `hello-done` (the
initiator's proof). Each proof is made and checked inside the party's key module (GENERAL
AUTHENTICATE, docs/apdu.md 3.20) under their pair key, so each side has confirmed the other
(claim 7) before any order data moves; the same command hands each side the two session keys,
one per direction, derived from the pair key and both nonces: a key belongs to one direction
of one session.

From then on every frame, both ways, is a `frame` message around the carried frame's bytes:
a sequence number (0, 1, 2, ... per direction) and a MAC over the direction, that number and
those bytes. So a frame replayed or reordered fails its number, one sent back the other way
(reflected) or taken from another session fails its MAC, and a plain frame is not a `frame`.
Each of these is a `WireError`: the connection is closed, since its stream can no longer be
trusted. The per-order MACs inside the frames stay what they were: they are the end-to-end
evidence a party keeps; the session authenticates the connection, it replaces none of them.

Why HMAC-SHA256 truncated to 16 bytes: on hashlib with the key's blocks prepared once per
session (card_applet.kdf.HmacKey) it costs about 1 us a frame where a pycryptodome CMAC or
GMAC costs tens (object set-up), and unlike the standard library's `hmac.digest` it keeps the
interpreter lock (that one lets go of it on every call, and a party with a commit thread then
waits for it back); 128 bits is the tag length of the project's other MACs (GCM tags,
confirmation answers), and a forger gets one try per connection, since the first bad MAC
closes it.

Sans-IO: `Channel` turns frames into frames; the connections are host.parties.session.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass, field

from card_applet.kdf import HmacKey
from host.errors import ErrorCode, WireError
from host.protocol.messages import FRAME_MAC, SessionFrame
from host.protocol.wire import LENGTH, MessageType, RawMessage

FRAME_LABEL = b"nettx/session/v1/frame"


class Direction(enum.IntEnum):
    """The byte that names a frame's direction in its MAC: the keys differ per direction
    already, and the label makes a reflected frame wrong twice over."""

    INITIATOR_TO_RESPONDER = 0x01
    RESPONDER_TO_INITIATOR = 0x02


def frame_mac(key: bytes | HmacKey, direction: Direction, seq: int, body: bytes) -> bytes:
    """HMAC-SHA256(key, "nettx/session/v1/frame" || direction || seq (8, BE) || body)[:16]."""
    data = FRAME_LABEL + bytes((direction,)) + seq.to_bytes(8, "big") + body
    prepared = key if isinstance(key, HmacKey) else HmacKey(key)
    return prepared.digest(data)[:FRAME_MAC]


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """One session's keys as this side uses them: `send` for its frames, `receive` for the
    peer's (the peer holds the same two, swapped)."""

    send: bytes = field(repr=False)
    receive: bytes = field(repr=False)


class Channel:
    """One open session's frame authentication, for one side."""

    def __init__(self, keys: SessionKeys, *, initiator: bool) -> None:
        self._keys = keys
        self._send_key, self._receive_key = HmacKey(keys.send), HmacKey(keys.receive)
        forward, back = Direction.INITIATOR_TO_RESPONDER, Direction.RESPONDER_TO_INITIATOR
        self.sending, self.receiving = (forward, back) if initiator else (back, forward)
        self.sent = 0  # the number of the next frame we send
        self.received = 0  # the number of the next frame we accept

    def seal(self, frame: bytes) -> bytes:
        """A whole frame (length prefix included) -> the whole `frame` message carrying it."""
        body = frame[LENGTH.size:]
        seq, self.sent = self.sent, self.sent + 1
        return SessionFrame(seq, body, frame_mac(self._send_key, self.sending, seq,
                                                 body)).to_frame()

    def open(self, data: bytes) -> bytes:
        """A received frame's bytes (no length prefix) -> the carried frame's bytes (no length
        prefix), or the `WireError` that closes the connection."""
        raw = RawMessage.parse(data)
        if raw.type is not MessageType.FRAME:
            said = ""
            if raw.type is MessageType.ERROR:  # worth showing, not worth believing
                said = f" ({raw.body.map.get('code')!s:.64}: {raw.body.map.get('message')!s:.200})"
            raise WireError(f"a {raw.type} message without the session's MAC{said}",
                            code=ErrorCode.UNAUTHENTICATED)
        message = SessionFrame.from_fields(raw.body)
        if message.seq < 0:  # no MAC covers it (the number is 8 unsigned bytes): never due
            raise WireError(f"frame number {message.seq} where {self.received} was due",
                            code=ErrorCode.SEQUENCE)
        expected = frame_mac(self._receive_key, self.receiving, message.seq, message.body)
        if not hmac.compare_digest(expected, message.mac):
            raise WireError("the frame's MAC does not verify (altered, sent back, or from "
                            "another session)", code=ErrorCode.BAD_MAC)
        if message.seq != self.received:
            raise WireError(f"frame number {message.seq} where {self.received} was due "
                            f"(replayed or reordered)", code=ErrorCode.SEQUENCE)
        self.received += 1
        return message.body
