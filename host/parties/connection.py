"""The connections that carry the wire protocol's frames (host.protocol.wire):
`AsyncConnection` (the servers, on asyncio streams) and `Connection` (the holder's client, on a
blocking socket). Every read has a timeout that bounds a whole message.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from host.errors import TransactionError, WireError
from host.protocol.wire import MAX_FRAME, FrameDecoder, Message, MessageType, expect, frame

READ_TIMEOUT = 15.0


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
