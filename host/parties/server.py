"""What every party's server shares: the asyncio accept loop, dispatch by message type, the
confirmation answer (claim 7), and the rule that no input crashes a server.

A handler takes its typed message (host.protocol.messages) and returns the reply frame, or
raises `TransactionError`: the peer gets an `error` message with its code and the connection
stays open for the next request. A malformed frame
(`WireError`) closes the connection after the error message, since the stream can no longer
be trusted to be in step. Anything else is a bug: it is logged with its traceback, the peer
gets `internal`, and the server carries on.

Slow peers cannot hold the server: a request's first byte and its whole have separate
deadlines, and when the connection table is full a newcomer sheds the connection that has kept
the server waiting longest (host.parties.admission, docs/protocol.md "Wire").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from host.errors import EnvelopeError, ErrorCode, NettxError, Refused, TransactionError, WireError
from host.parties.admission import ConnectionTable, Limits, Slot
from host.parties.connection import AsyncConnection
from host.parties.durability import Halt, halt_process
from host.parties.keymodule import KeyModule
from host.protocol import codec, envelope, messages
from host.protocol.envelope import Header, OpenedPart, PartReader
from host.protocol.messages import Confirm, Confirmed, Forwarded, error_frame
from host.protocol.order import Party
from host.protocol.wire import MessageType, RawMessage
from host.storage.sqlite import StorageLost

#: takes the message class its type names (host.protocol.messages), returns the reply frame
Handler = Callable[[Any], Awaitable[bytes]]
P = TypeVar("P")

PRESSURE_LOG_EVERY = 10.0  # seconds between warnings that the connection table is full


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    window: int = 300  # seconds a timestamp may differ from our clock
    read_timeout: float = 15.0  # a whole request, from its first byte to its last
    idle_timeout: float | None = None  # waiting for a request's first byte; None: read_timeout
    limits: Limits = field(default_factory=Limits)  # the connection table (host.parties.admission)
    crash_at: str | None = None  # tests: SIGKILL ourselves at this named point

    @property
    def idle_after(self) -> float:
        return self.read_timeout if self.idle_timeout is None else self.idle_timeout


class PartyServer:
    role = "party"

    def __init__(self, keys: KeyModule, config: ServerConfig) -> None:
        self.keys = keys
        self.config = config
        self.log = logging.getLogger(f"nettx.{self.role}")
        #: what a lost storage does to this party: the process stops (a test records instead)
        self.halt: Halt = halt_process(self.role)
        self.handlers: dict[MessageType, Handler] = {MessageType.CONFIRM: self.on_confirm}
        self.server: asyncio.Server | None = None
        self.table = ConnectionTable(config.limits)
        self._pressure: Counter[str] = Counter()  # shed / refused since the last warning
        self._pressure_logged = -PRESSURE_LOG_EVERY

    @property
    def identifier(self) -> str:
        return self.keys.identifier

    def crash_point(self, name: str) -> None:
        """Fault injection for the kill-and-restart tests: die exactly here, as a kill -9."""
        if self.config.crash_at == name:
            self.log.warning("crash point %s: killing this process", name)
            os.kill(os.getpid(), signal.SIGKILL)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connection, self.config.host,
                                                 self.config.port)
        port = self.server.sockets[0].getsockname()[1]
        self.log.info("%s %s listening on %s:%d", self.role, self.identifier,
                      self.config.host, port)
        return int(port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        conn = AsyncConnection(reader, writer, timeout=self.config.read_timeout)
        peer = writer.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        shed = False

        def shed_me() -> None:
            # only ever a connection waiting on its peer (admission), never mid-handler
            nonlocal shed
            shed = True
            conn.refuse(error_frame(Refused(
                ErrorCode.BUSY, "the server is full and this connection waited longest")))
            task.cancel()

        address = str(peer[0]) if peer else "?"
        slot = self.table.admit(address, loop.time(), shed_me)
        if slot is None:
            why = (f"{len(self.table)} connections ({self.table.count(address)} from your "
                   f"address), none idle for {self.config.limits.shed_after:g} s")
            self.log.debug("%s: refused: %s", peer, why)
            self._note_pressure("refused", loop.time())
            conn.refuse(error_frame(Refused(ErrorCode.BUSY, why)))
            await conn.close()
            return
        try:
            await self._serve(conn, slot, peer)
        except asyncio.CancelledError:
            if not shed:
                raise
            task.uncancel()  # our own cancellation, done with
            self.log.debug("%s: shed (waited on its peer longest while the server was full)",
                           peer)
            self._note_pressure("shed", loop.time())
        finally:
            self.table.release(slot)
            await conn.close()

    def _note_pressure(self, what: str, now: float) -> None:
        """A full table is worth a warning, but one line per connection would let a flood
        flood the log too: at most one line per PRESSURE_LOG_EVERY seconds."""
        self._pressure[what] += 1
        if now - self._pressure_logged >= PRESSURE_LOG_EVERY:
            self.log.warning("connection table full (%d open): %s in the last %.0f s",
                             len(self.table), ", ".join(f"{n} {w}" for w, n in
                                                        sorted(self._pressure.items())),
                             min(now - self._pressure_logged, PRESSURE_LOG_EVERY))
            self._pressure.clear()
            self._pressure_logged = now

    async def _serve(self, conn: AsyncConnection, slot: Slot, peer: object) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    data = await conn.receive_frame(idle_timeout=self.config.idle_after)
                    if data is None:
                        return
                    slot.serving()
                    raw = RawMessage.parse(data)
                    handler = self.handlers.get(raw.type)
                    if handler is None:  # said before the body is read: it is not ours to read
                        raise WireError(f"a {self.role} does not take {raw.type} messages",
                                        code=ErrorCode.UNEXPECTED)
                    reply = await self._handle(handler, messages.from_raw(raw))
                    slot.waiting(loop.time())  # from here on, the peer keeps us waiting
                    await conn.send_raw(reply)
                except WireError as exc:
                    self.log.info("%s: %s; closing", peer, exc)
                    slot.waiting(loop.time())
                    with contextlib.suppress(TransactionError):
                        await conn.send_raw(error_frame(exc))
                    return
                except TransactionError as exc:
                    if exc.code is ErrorCode.CONNECTION_LOST:
                        return
                    self.log.info("%s: refused: %s", peer, exc)
                    slot.waiting(loop.time())
                    await conn.send_raw(error_frame(exc))
        except TransactionError:
            return  # the peer went away while we answered
        except Exception:
            self.log.exception("%s: internal error", peer)
            slot.waiting(loop.time())
            with contextlib.suppress(Exception):
                await conn.send_raw(error_frame(Refused(ErrorCode.INTERNAL, "internal error")))

    async def _handle(self, handler: Handler, message: messages.Message) -> bytes:
        """`handler`'s answer; a lost storage stops the party, whichever handler met it."""
        try:
            return await handler(message)
        except StorageLost as exc:
            self.halt(exc)
            # only a test's halt returns: the peer learns nothing it could rely on
            raise Refused(ErrorCode.INTERNAL, "storage lost: this party is stopping") from exc

    async def open_request(self, request: Forwarded, purpose: str,
                           read: PartReader[P], *extra: bytes) -> tuple[bytes, OpenedPart[P]]:
        """A request the seller forwards: check the seller's MAC over exactly these bytes
        first (nothing is decrypted for an unauthenticated asker), then open our part.
        Returns (request digest, part); freshness is the caller's, since a retransmission is
        answered at any age."""
        header = our_header(self.keys, Party(self.role), request.header)
        digest = request_digest(request.header, request.part, *extra)
        await self.keys.check_mac(header.seller, digest, request.mac,
                                  envelope.context(purpose, header.order_id), f"{purpose} request")
        opened = await open_part(self.keys, Party(self.role), header, request.header,
                                 request.part, read)
        return digest, opened

    async def receipt(self, header: Header, header_bytes: bytes, digest: bytes,
                      **content: object) -> bytes:
        """Our word to the holder, sealed for its card: only the card can open it, so the
        seller cannot alter what we said."""
        return await self.keys.seal(
            header.holder, codec.encode({**content, "digest": digest}),
            envelope.receipt_aad(self.role, header_bytes),
            envelope.context("receipt", header.order_id))

    async def on_confirm(self, message: Confirm) -> bytes:
        """Answer a confirmation challenge from `peer` (the holder, relayed by the seller, or
        the seller itself). Only `peer` can check the answer, so answering anyone is safe."""
        if message.party != self.role:
            raise Refused(ErrorCode.WRONG_PARTY, f"this is the {self.role}, not the "
                                                 f"{message.party}")
        return Confirmed(await self.keys.answer(message.peer, message.challenge)).to_frame()


async def confirm_peer(keys: KeyModule, peer_id: str, party: str,
                       conn: AsyncConnection) -> None:
    """Confirm a party over an open connection before sending it anything (claim 7)."""

    async def exchange(challenge: bytes) -> bytes:
        reply = await conn.request(Confirm(party, keys.identifier, challenge), Confirmed)
        return reply.response

    await keys.confirm(peer_id, exchange)


def run_until_signalled(server: PartyServer, ready: Callable[[int], None] | None = None,
                        on_start: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run `server` until SIGTERM or SIGINT; `ready(port)` is told the bound port."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        port = await server.start()
        if ready is not None:
            ready(port)
        if on_start is not None:
            await on_start()
        await stop.wait()
        await server.close()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())


LOOP_ENV = "NETTX_LOOP"  # uvloop | asyncio: which event loop a party's server runs on


def event_loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """The party servers' event loop: uvloop where it is installed (it carries more orders
    per CPU second; bench/orders.py --loops measures both), asyncio's own otherwise, or the
    one NETTX_LOOP names."""
    choice = choice or os.environ.get(LOOP_ENV) or "auto"
    if choice not in ("auto", "uvloop", "asyncio"):
        raise NettxError(f"{LOOP_ENV}={choice}: expected uvloop or asyncio")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise NettxError(f"{LOOP_ENV}=uvloop, but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


def our_header(keys: KeyModule, party: Party, header_bytes: bytes) -> Header:
    """The header of a forwarded request, which must name us as `party`."""
    header = Header.from_bytes(header_bytes)
    if header.party_id(party) != keys.identifier:
        raise EnvelopeError(ErrorCode.WRONG_PARTY, f"this order names {header.party_id(party)} as "
                                           f"{party}, not {keys.identifier}")
    return header


async def open_part(keys: KeyModule, party: Party, header: Header, header_bytes: bytes,
                    box: bytes, read: PartReader[P]) -> OpenedPart[P]:
    """Open our part of the order `header` (parsed from `header_bytes`, and checked to name
    us, by the caller) and `read` its fields."""
    plaintext = await keys.open(header.holder, box, envelope.part_aad(party, header_bytes),
                                envelope.context("part", header.order_id), what=f"{party} part")
    return envelope.parse_part(header, header_bytes, party, box, plaintext, read)


def staleness(header: Header, window: int) -> str | None:
    """Why the header is too old for a *new* decision, or None. A retransmission of a request
    already decided is answered at any age: refusing it would strand a committed debit."""
    try:
        header.check_fresh(window)
    except EnvelopeError as exc:
        return exc.reason
    return None


def request_digest(*pieces: bytes) -> bytes:
    """What tells a retransmission (same bytes) from a replay (same order id, other bytes)."""
    h = hashlib.sha256(b"nettx/request/v1")
    for piece in pieces:
        h.update(len(piece).to_bytes(4, "big") + piece)
    return h.digest()
