"""AsyncConnection's deadlines on each event loop a party may run on (host.parties.server
event_loop_factory): the idle bound until a request's first byte, then one bound for the
whole message; a send to a peer that stops reading gives up after the timeout."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from host.errors import ConnectionFailed, ErrorCode, NettxError, WireError
from host.parties.connection import AsyncConnection
from host.parties.server import LOOP_ENV, event_loop_factory
from host.protocol.wire import MessageType, frame

T = TypeVar("T")
LOOPS = ["asyncio", "uvloop"]
REQUEST = frame(MessageType.FORM_REQUEST, holder="holder:a@example.org", nonce=bytes(16))


def run(loop: str, test: Callable[[AsyncConnection, socket.socket], Awaitable[T]],
        timeout: float = 0.4) -> T:
    async def main() -> T:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        conn = AsyncConnection(reader, writer, timeout=timeout)
        try:
            return await test(conn, theirs)
        finally:
            conn.writer.transport.abort()
            theirs.close()

    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        return runner.run(main())


async def trickle(sock: socket.socket, data: bytes, every: float) -> None:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    for i in range(len(data)):
        await loop.sock_sendall(sock, data[i:i + 1])
        await asyncio.sleep(every)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_whole_message_in_pieces_within_the_deadline_is_read(loop: str) -> None:
    async def test(conn: AsyncConnection, peer: socket.socket) -> bytes | None:
        sender = asyncio.create_task(trickle(peer, REQUEST, 0.2 / len(REQUEST)))
        body = await conn.receive_frame(idle_timeout=5)
        await sender
        return body

    assert run(loop, test) == REQUEST[4:]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_trickled_message_is_cut_at_its_deadline_from_the_first_byte(loop: str) -> None:
    """Each byte comes well within any per-read bound; the message does not, and the long
    idle bound does not apply once the first byte is in."""

    async def test(conn: AsyncConnection, peer: socket.socket) -> float:
        sender = asyncio.create_task(trickle(peer, REQUEST, 0.05))
        started = time.monotonic()
        with pytest.raises(WireError, match=r"no whole message within 0\.4 s") as caught:
            await conn.receive_frame(idle_timeout=5)
        sender.cancel()
        assert caught.value.code is ErrorCode.TIMEOUT
        return time.monotonic() - started

    assert 0.3 < run(loop, test) < 2


@pytest.mark.parametrize("loop", LOOPS)
def test_an_idle_connection_gets_the_idle_bound(loop: str) -> None:
    async def test(conn: AsyncConnection, peer: socket.socket) -> float:
        started = time.monotonic()
        with pytest.raises(WireError, match=r"no request within 1\.2 s"):
            await conn.receive_frame(idle_timeout=1.2)  # longer than the message bound
        return time.monotonic() - started

    assert 1.1 < run(loop, test) < 3


@pytest.mark.parametrize("loop", LOOPS)
def test_a_send_to_a_peer_that_does_not_read_gives_up_at_the_timeout(loop: str) -> None:
    async def test(conn: AsyncConnection, peer: socket.socket) -> float:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="send timed out"):
            for _ in range(64):  # far more than the socket buffers hold
                await conn.send_raw(bytes(1 << 20))
        return time.monotonic() - started

    assert 0.3 < run(loop, test) < 3


@pytest.mark.parametrize("loop", LOOPS)
def test_each_request_has_its_own_deadline_on_a_long_lived_connection(loop: str) -> None:
    """Requests that each arrive within the bound keep a connection alive for several times
    the bound (one timer per connection, moved by each read), and the wait after them is
    still cut at its own bound."""

    async def test(conn: AsyncConnection, peer: socket.socket) -> float:
        for _ in range(6):  # 6 x 0.15 s: more than twice the 0.4 s bound in all
            await asyncio.sleep(0.15)
            peer.sendall(REQUEST)
            assert await conn.receive_frame(idle_timeout=0.4) == REQUEST[4:]
        started = time.monotonic()
        with pytest.raises(WireError, match=r"no request within 0\.4 s"):
            await conn.receive_frame(idle_timeout=0.4)
        return time.monotonic() - started

    assert 0.3 < run(loop, test) < 2


@pytest.mark.parametrize("loop", LOOPS)
def test_a_read_cancelled_from_outside_is_cancelled_not_timed_out(loop: str) -> None:
    """What cancels a waiting read from outside (a server shedding the connection) stays a
    cancellation, and a later read on the connection still gets its own deadline."""

    async def test(conn: AsyncConnection, peer: socket.socket) -> None:
        reading = asyncio.create_task(conn.receive_frame(idle_timeout=5))
        await asyncio.sleep(0.05)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        with pytest.raises(WireError, match=r"no request within 0\.2 s"):
            await conn.receive_frame(idle_timeout=0.2)

    run(loop, test)


def test_the_event_loop_is_named_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert event_loop_factory() is asyncio.new_event_loop
    monkeypatch.setenv(LOOP_ENV, "twisted")
    with pytest.raises(NettxError, match="expected uvloop or asyncio"):
        event_loop_factory()
