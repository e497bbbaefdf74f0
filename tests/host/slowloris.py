"""A bounded slowloris against a party's server on loopback, for the tests and bench/.

Every connection does as little as keeps it open: nothing at all, a frame's length header and
then one byte of its body per tick, or one cheap valid request per tick. Like the classic
tool, a connection the server closes is reopened on its next tick. The attack runs on its own
event loop in a daemon thread, only to 127.0.0.1, and stops by itself after `duration` seconds
(or on `stop()`, or leaving the `with` block).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import struct
import threading
from dataclasses import dataclass, field

import cbor2

from host.protocol.wire import FrameDecoder, MessageType, frame

LOOPBACK = "127.0.0.1"


class Kind(enum.Enum):
    IDLE = "idle"  # connect, then send nothing
    TRICKLE = "trickle"  # a frame's length header, then its body one byte per tick
    CHEAP = "cheap"  # one small valid request per tick, reading the answers


def cheap_request(role: str) -> bytes:
    """A request a party answers at once: the seller its form (a well-formed form request:
    it MACs its form for this holder and nonce), the card manager and the delivery company
    the first step of a session handshake (a `hello`: one key operation, then it waits for
    `hello-done`). Those two take nothing else from a stranger without the seller's row, and
    a second `hello` closes the connection, so against them the cheap attack sends its hello
    once per connection and then holds it."""
    if role == "seller":
        return frame(MessageType.FORM_REQUEST, holder="holder:x", nonce=bytes(16))
    return frame(MessageType.HELLO, party=role, peer="seller:x", nonce=bytes(32))


@dataclass
class Counts:
    opened: int = 0  # connections the server accepted (TCP)
    open_now: int = 0  # of those, still open
    refused: int = 0  # connect failures
    told_busy: int = 0  # `busy` errors received (refused or shed by the server)
    answers: int = 0  # other frames received


@dataclass
class Slowloris:
    port: int
    kind: Kind
    role: str = "seller"
    connections: int = 256
    tick: tuple[float, float] = (3.0, 5.0)  # seconds between sends, drawn per tick
    duration: float = 60.0  # the attack stops by itself after this
    seed: int = 7
    counts: Counts = field(default_factory=Counts)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Slowloris:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True,
                                        name=f"slowloris-{self.role}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Slowloris:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> Counts:
        with self._lock:
            return Counts(**vars(self.counts))

    def _count(self, name: str, delta: int = 1) -> None:
        with self._lock:
            setattr(self.counts, name, getattr(self.counts, name) + delta)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.duration
        stopped = asyncio.Event()

        async def watch() -> None:
            while not self._stop.is_set() and loop.time() < end:
                await asyncio.sleep(0.05)
            stopped.set()

        workers = [asyncio.create_task(self._worker(i, stopped))
                   for i in range(self.connections)]
        await watch()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _sleep_or_stop(self, seconds: float, *events: asyncio.Event) -> None:
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _worker(self, i: int, stopped: asyncio.Event) -> None:
        rng = random.Random(self.seed * 1000 + i)
        request = cheap_request(self.role)
        # spread the connections' phases over one tick, as a real attack's would be
        await self._sleep_or_stop(rng.uniform(0, 0.5), stopped)
        while not stopped.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(LOOPBACK, self.port), 5)
            except (OSError, TimeoutError):
                self._count("refused")
                await self._sleep_or_stop(rng.uniform(*self.tick), stopped)
                continue
            self._count("opened")
            self._count("open_now")
            closed = asyncio.Event()
            reading = asyncio.create_task(self._read(reader, closed))
            try:
                body = request[4:]
                if self.kind is Kind.TRICKLE:
                    writer.write(struct.pack(">I", len(body)))
                elif self.kind is Kind.CHEAP:  # at once, so a fresh connection looks active
                    writer.write(request)
                sent = 0
                while not stopped.is_set() and not closed.is_set():
                    await self._sleep_or_stop(rng.uniform(*self.tick), stopped, closed)
                    if stopped.is_set() or closed.is_set():
                        break
                    if self.kind is Kind.TRICKLE and sent < len(body):
                        writer.write(body[sent:sent + 1])
                        sent += 1
                    elif self.kind is Kind.CHEAP and self.role == "seller":
                        writer.write(request)
            except OSError:
                pass
            finally:
                reading.cancel()
                writer.transport.abort()
                self._count("open_now", -1)
            if not stopped.is_set():  # reopened on the next tick, as the classic tool does
                await self._sleep_or_stop(rng.uniform(*self.tick), stopped)

    async def _read(self, reader: asyncio.StreamReader, closed: asyncio.Event) -> None:
        decoder = FrameDecoder()
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                for f in decoder.feed(data):
                    message = cbor2.loads(f)
                    self._count("told_busy" if message.get("code") == "busy" else "answers")
        closed.set()
