"""The seller's side of a session (host.protocol.session, docs/protocol.md "Sessions"): a
connection confirmed once by a handshake in the key module, then one request at a time,
every frame authenticated; and a bounded pool of such connections per party, reused across
orders.

A pooled connection may have been closed by the server while it sat idle (its idle timeout,
or shed from a full connection table: a server closes an idle session connection without a
word). The pool drops a connection that is closed or has been idle longer than `max_idle`
(shorter than a server's idle timeout) before it lends it; and a request on a *reused*
connection that ends without a byte of answer is sent once more on a fresh one. That second
send is a retransmission (docs/protocol.md section 7: the peer answers it from its record,
never a second debit), so it changes nothing the order's lifecycle allows; any other failure,
or a failure on a fresh connection, is the caller's, exactly as for a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from host.errors import ConnectionFailed, ErrorCode, PeerRefused, TransactionError
from host.parties.connection import AsyncConnection
from host.parties.keymodule import KeyModule
from host.protocol import messages
from host.protocol.messages import SESSION_NONCE, Hello, HelloAck, HelloDone, Message
from host.protocol.session import Channel, SessionKeys

M = TypeVar("M", bound=Message)

POOL_SIZE = 8  # connections per party: one request at a time on each
MAX_IDLE = 5.0  # seconds: well under a server's idle timeout (15 s by default)


class NoAnswer(ConnectionFailed):
    """The connection ended before any byte of the answer: on a reused connection, most
    likely closed by the server while idle."""


class Session:
    """A connection on which this party (the initiator) has an open session with `peer`."""

    def __init__(self, conn: AsyncConnection, channel: Channel, peer: str) -> None:
        self.conn, self.channel, self.peer = conn, channel, peer
        self.idle_since = asyncio.get_running_loop().time()

    @classmethod
    async def open(cls, keys: KeyModule, host: str, port: int, peer: str, role: str,
                   timeout: float) -> Session:
        """Connect and run the handshake: `peer` (playing `role`) is confirmed by our key
        module before this returns, so nothing of an order goes to an unconfirmed party."""
        conn = await AsyncConnection.open(host, port, timeout=timeout)
        try:
            ours = secrets.token_bytes(SESSION_NONCE)
            ack = await conn.request(Hello(role, keys.identifier, ours), HelloAck)
            done = await keys.handshake(peer, initiator=True, initiator_nonce=ours,
                                        responder_nonce=ack.nonce, peer_proof=ack.proof)
            assert done.send_key is not None and done.receive_key is not None
            # no answer to wait for: our first request follows, and the peer checks this proof
            # before it reads that request
            await conn.send(HelloDone(done.proof))
        except BaseException:
            await conn.close()
            raise
        return cls(conn, Channel(SessionKeys(done.send_key, done.receive_key), initiator=True),
                   peer)

    @property
    def closed(self) -> bool:
        return self.conn.reader.at_eof() or self.conn.writer.transport.is_closing()

    async def request(self, message: Message, answer: type[M]) -> M:
        """Send `message` in the session; its `answer`, or the peer's refusal (PeerRefused,
        authenticated: it came in the session). A frame that fails the session closes it."""
        try:
            await self.conn.send_raw(self.channel.seal(message.to_frame()))
            data = await self.conn.receive_frame()
        except ConnectionFailed as exc:  # a reset: answered, or not, no byte of it came
            if self.conn.decoder.mid_frame:
                raise
            raise NoAnswer(exc.code, exc.reason) from exc
        if data is None:
            raise NoAnswer(ErrorCode.CONNECTION_LOST, "the peer closed the connection")
        return messages.expect(messages.parse(self.channel.open(data)), answer)

    async def close(self) -> None:
        await self.conn.close()


class SessionPool:
    """At most `size` sessions with one party, each lent to one request at a time."""

    def __init__(self, keys: KeyModule, host: str, port: int, peer: str, role: str, *,
                 timeout: float, size: int = POOL_SIZE, max_idle: float = MAX_IDLE) -> None:
        self.keys, self.host, self.port, self.peer, self.role = keys, host, port, peer, role
        self.timeout, self.max_idle = timeout, max_idle
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Session] = []
        self.opened = 0  # sessions opened (handshakes), for tests and benches

    async def _fresh(self) -> Session:
        session = await Session.open(self.keys, self.host, self.port, self.peer, self.role,
                                     self.timeout)
        self.opened += 1
        return session

    async def _reusable(self) -> Session | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            session = self._idle.pop()  # the most recently used first: the likeliest alive
            if not session.closed and now - session.idle_since < self.max_idle:
                return session
            await session.close()
        return None

    async def request(self, message: Message, answer: type[M], *,
                      before_send: Callable[[], Awaitable[None]] | None = None) -> M:
        """`message`'s answer over a pooled session. The session is open (the party
        confirmed) before `before_send` runs and before anything of `message` leaves."""
        async with self._slots:
            session = await self._reusable()
            reused = session is not None
            if session is None:
                session = await self._fresh()
            if before_send is not None:
                await before_send()
            try:
                try:
                    reply = await session.request(message, answer)
                except NoAnswer:
                    if not reused:
                        raise
                    await session.close()  # closed while idle: once more, on a fresh one
                    session = await self._fresh()
                    reply = await session.request(message, answer)
            except PeerRefused:
                self._keep(session)  # an answer in the session: the connection is fine
                raise
            except BaseException:
                await session.close()
                raise
            self._keep(session)
            return reply

    def _keep(self, session: Session) -> None:
        session.idle_since = asyncio.get_running_loop().time()
        self._idle.append(session)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            with contextlib.suppress(TransactionError, OSError):
                await session.close()
