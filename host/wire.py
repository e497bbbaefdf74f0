"""The wire protocol between the parties (docs/protocol.md, "Wire").

A frame is a 4-byte big-endian length and that many bytes of CBOR: a map whose "type" names
the message. Frames above the maximum size are refused from their length alone, before any
byte of the body is buffered. Every read has a timeout. A peer that sends something
malformed gets one `error` message saying what, and the connection is closed.

`FrameDecoder` is sans-IO (bytes in, frames out); `AsyncConnection` (the servers, on asyncio
streams) and `Connection` (the holder's client, on a blocking socket) are thin wrappers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from host import codec
from host.codec import Fields
from host.errors import TransactionError, WireError

LENGTH = struct.Struct(">I")
MAX_FRAME = 256 * 1024
READ_TIMEOUT = 15.0


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


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    body: Fields = field(compare=False)

    @classmethod
    def parse(cls, frame: bytes) -> Message:
        body = Fields(codec.decode(frame), "message")
        name = body.get("type", str, max_size=32)
        try:
            kind = MessageType(name)
        except ValueError:
            raise WireError(f"unknown message type {name!r}", code="unknown-type") from None
        body.what = name
        return cls(kind, body)


def frame(kind: MessageType, **body: Any) -> bytes:
    payload = codec.encode({"type": kind.value, **body})
    if len(payload) > MAX_FRAME:
        raise WireError(f"{kind} message of {len(payload)} bytes exceeds {MAX_FRAME}",
                        code="too-large")
    return LENGTH.pack(len(payload)) + payload


def error_frame(exc: TransactionError) -> bytes:
    return frame(MessageType.ERROR, code=exc.code, message=exc.reason[:500])


class FrameDecoder:
    """Bytes in, whole frames out."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self._buffer)
            if length > self.max_frame:
                raise WireError(f"frame of {length} bytes exceeds the maximum {self.max_frame}",
                                code="too-large")
            if len(self._buffer) < LENGTH.size + length:
                break
            frames.append(bytes(self._buffer[LENGTH.size:LENGTH.size + length]))
            del self._buffer[:LENGTH.size + length]
        return frames

    @property
    def mid_frame(self) -> bool:
        return bool(self._buffer)


def raise_if_error(message: Message) -> Message:
    if message.type is MessageType.ERROR:
        code = message.body.get("code", str, max_size=64)
        raise TransactionError(code, message.body.get("message", str, max_size=1000))
    return message


def expect(message: Message, kind: MessageType) -> Message:
    raise_if_error(message)
    if message.type is not kind:
        raise WireError(f"expected {kind}, got {message.type}", code="unexpected")
    return message


class AsyncConnection:
    """One TCP connection on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float = READ_TIMEOUT, max_frame: int = MAX_FRAME) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.decoder = FrameDecoder(max_frame)
        self._frames: list[bytes] = []

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = READ_TIMEOUT) -> AsyncConnection:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise TransactionError("unreachable", f"{host}:{port}: {exc or 'timeout'}") from exc
        return cls(reader, writer, timeout)

    async def receive(self, idle_timeout: float | None = None) -> Message | None:
        """The next message; None when the peer closed cleanly between frames. The timeout
        bounds the whole message, so a peer trickling one byte at a time cannot hold it.
        With `idle_timeout` (a server between requests), the wait for the first byte has its
        own bound, and the timeout runs from that byte to the last."""
        loop = asyncio.get_running_loop()
        idle = None if self.decoder.mid_frame else idle_timeout
        started = idle is None
        deadline = loop.time() + (self.timeout if idle is None else idle)
        while not self._frames:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
            except TimeoutError:
                if started:
                    raise WireError(f"no whole message within {self.timeout:g} s",
                                    code="timeout") from None
                raise WireError(f"no request within {idle:g} s", code="timeout") from None
            except OSError as exc:
                raise TransactionError("connection-lost", str(exc)) from exc
            if not data:
                if self.decoder.mid_frame:
                    raise WireError("connection closed in the middle of a frame",
                                    code="truncated")
                return None
            if not started:
                started, deadline = True, loop.time() + self.timeout
            self._frames.extend(self.decoder.feed(data))
        return Message.parse(self._frames.pop(0))

    async def send(self, kind: MessageType, **body: Any) -> None:
        await self.send_raw(frame(kind, **body))

    async def send_raw(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise TransactionError("connection-lost", str(exc) or "send timed out") from exc

    async def request(self, kind: MessageType, answer: MessageType, **body: Any) -> Message:
        await self.send(kind, **body)
        message = await self.receive()
        if message is None:
            raise TransactionError("connection-lost", "the peer closed the connection")
        return expect(message, answer)

    def refuse(self, data: bytes) -> None:
        """Send a last frame without waiting for the peer to read it, and close: what a
        server tells a connection it sheds, which may be a peer that never reads."""
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(data)
        self.writer.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        # a peer that reads nothing would keep our unsent bytes, and the socket, forever
        self.writer.transport.abort()


class Connection:
    """The holder's blocking client connection."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TransactionError("unreachable", f"{host}:{port}: {exc}") from exc
        self.decoder = FrameDecoder()
        self._frames: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise TransactionError("connection-lost", str(exc)) from exc

    def receive(self) -> Message:
        deadline = time.monotonic() + self.timeout
        while not self._frames:
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no whole message within the timeout")
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
            except OSError as exc:  # includes socket.timeout
                raise TransactionError("connection-lost", str(exc) or "timeout") from exc
            if not data:
                raise TransactionError("connection-lost", "the seller closed the connection")
            self._frames.extend(self.decoder.feed(data))
        return Message.parse(self._frames.pop(0))

    def request(self, kind: MessageType, answer: MessageType, **body: Any) -> Message:
        self.send_raw(frame(kind, **body))
        return expect(self.receive(), answer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
