"""The connections that carry the wire protocol's messages (host.protocol.messages):
`AsyncConnection` (the servers, on asyncio streams) and `Connection` (the holder's client, on a
blocking socket). Every read has a timeout that bounds a whole message.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from typing import TypeVar

from host.errors import ConnectionFailed, ErrorCode, WireError
from host.protocol import messages
from host.protocol.messages import Message
from host.protocol.wire import MAX_FRAME, FrameDecoder

M = TypeVar("M", bound=Message)
LOST = ErrorCode.CONNECTION_LOST

READ_TIMEOUT = 15.0


class AsyncConnection:
    """One TCP connection on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float = READ_TIMEOUT, max_frame: int = MAX_FRAME) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.decoder = FrameDecoder(max_frame)
        self._frames: list[bytes] = []
        # the read deadline (see _wait_until)
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task[object] | None = None  # the task a read waits in
        self._fired = False  # the deadline cancelled that task
        self._cancelling = 0  # its cancel requests from outside when the read began

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = READ_TIMEOUT) -> AsyncConnection:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise ConnectionFailed(ErrorCode.UNREACHABLE,
                                   f"{host}:{port}: {exc or 'timeout'}") from exc
        return cls(reader, writer, timeout)

    async def receive(self) -> Message | None:
        """The next message, typed; None when the peer closed cleanly between frames."""
        data = await self.receive_frame()
        return None if data is None else messages.parse(data)

    async def receive_frame(self, idle_timeout: float | None = None) -> bytes | None:
        """The next frame's bytes; None when the peer closed cleanly between frames. The timeout
        bounds the whole message, so a peer trickling one byte at a time cannot hold it.
        With `idle_timeout` (a server between requests), the wait for the first byte has its
        own bound, and the timeout runs from that byte to the last."""
        if self._frames:  # already read with an earlier frame: no wait, no deadline
            return self._frames.pop(0)
        loop = asyncio.get_running_loop()
        idle = None if self.decoder.mid_frame else idle_timeout
        started = idle is None
        self._wait_until(loop, loop.time() + (self.timeout if idle is None else idle))
        try:
            while not self._frames:
                data = await self.reader.read(65536)
                if not data:
                    if self.decoder.mid_frame:
                        raise WireError("connection closed in the middle of a frame",
                                        code=ErrorCode.TRUNCATED)
                    return None
                self._frames.extend(self.decoder.feed(data))
                if not started:
                    started = True
                    if not self._frames:  # more to wait for: from here, the whole bound
                        self._wait_until(loop, loop.time() + self.timeout)
        except asyncio.CancelledError:
            if not self._expired(loop):
                raise
            if started:
                raise WireError(f"no whole message within {self.timeout:g} s",
                                code=ErrorCode.TIMEOUT) from None
            raise WireError(f"no request within {idle:g} s", code=ErrorCode.TIMEOUT) from None
        except OSError as exc:
            raise ConnectionFailed(LOST, str(exc)) from exc
        finally:
            self._waiter = None
        return self._frames.pop(0)

    # A read's deadline is kept lazily: one timer per connection, moved by storing a time, not
    # by a timer per read (asyncio.timeout arms one and cancels it every time, which costs
    # more than reading a small frame). The timer, when it fires, checks the deadline then:
    # passed, it cancels the waiting task, as asyncio.timeout would; not yet, it re-arms for
    # it; no read waiting, it lapses.

    def _wait_until(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._deadline, self._waiter, self._fired = deadline, task, False
        self._cancelling = task.cancelling()
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._waiter is None:
            return  # no read is waiting: the next one arms its own
        # within a millisecond counts as reached: uvloop's timers and clock tick in
        # milliseconds, and re-arming for less would fire again on the same tick
        if loop.time() < self._deadline - 0.001:
            self._timer = loop.call_at(self._deadline, self._on_timer, loop)
            return
        self._fired = True
        self._waiter.cancel()

    def _expired(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the CancelledError being handled is our deadline's (then consumed), not
        a cancellation from outside, which the caller re-raises."""
        task = self._waiter
        if not self._fired or task is None:
            return False
        self._fired = False
        return task.uncancel() <= self._cancelling

    async def send(self, message: Message) -> None:
        await self.send_raw(message.to_frame())

    async def send_raw(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            transport = self.writer.transport
            if not transport.get_write_buffer_size():
                # all of it went to the kernel: drain cannot wait, only report a lost peer,
                # which a closing transport says (the common case neither awaits nor arms a
                # timer; a peer lost unseen here is met by the next read)
                if transport.is_closing():
                    await self.writer.drain()
                return
            async with asyncio.timeout(self.timeout):  # the peer is behind: bound its reading
                await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise ConnectionFailed(LOST, str(exc) or "send timed out") from exc

    async def request(self, message: Message, answer: type[M]) -> M:
        """Send `message`; its `answer`, or the peer's refusal raised as PeerRefused."""
        await self.send(message)
        reply = await self.receive()
        if reply is None:
            raise ConnectionFailed(LOST, "the peer closed the connection")
        return messages.expect(reply, answer)

    def refuse(self, data: bytes) -> None:
        """Send a last frame without waiting for the peer to read it, and close: what a
        server tells a connection it sheds, which may be a peer that never reads."""
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(data)
        self.writer.close()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
        # a peer that reads nothing would keep our unsent bytes, and the socket, forever
        self.writer.transport.abort()


class Connection:
    """The holder's blocking client connection."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ConnectionFailed(ErrorCode.UNREACHABLE, f"{host}:{port}: {exc}") from exc
        self.decoder = FrameDecoder()
        self._frames: list[bytes] = []

    def quiet(self) -> bool:
        """Whether the peer has sent nothing since its last answer, not even a close: a
        connection kept between requests is worth reusing only then."""
        if self._frames or self.decoder.mid_frame:
            return False
        poll = select.poll()
        try:
            poll.register(self.sock, select.POLLIN)
        except (OSError, ValueError):  # closed under us
            return False
        return not poll.poll(0)  # readable: a byte waits, or the end of the stream

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionFailed(LOST, str(exc)) from exc

    def send(self, message: Message) -> None:
        self.send_raw(message.to_frame())

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
                raise ConnectionFailed(LOST, str(exc) or "timeout") from exc
            if not data:
                raise ConnectionFailed(LOST, "the seller closed the connection")
            self._frames.extend(self.decoder.feed(data))
        return messages.parse(self._frames.pop(0))

    def request(self, message: Message, answer: type[M]) -> M:
        self.send(message)
        return messages.expect(self.receive(), answer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
