"""The vpcd protocol (vsmartcard's virtual PCD), card side.

Every message is a 2-byte big-endian length then that many bytes. A 1-byte message is a
control code; anything longer is a command APDU, answered with a response APDU.

`FrameBuffer` is sans-IO (bytes in, whole frames out) and shared with the terminal's
embedded reader; `VpcdCard` is the thin socket loop the card process runs.

The loop is on every APDU's path, so it does what a minimal echo card does and no more
(bench/minimal_echo.py, bench/README.md): a blocking recv (no poll before it: `stop` is
served by a watcher thread that shuts the socket down), TCP_QUICKACK re-armed without
asking the socket its family each time, one sendall per reply, no log line per frame.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from card_applet.atr import ATR

log = logging.getLogger(__name__)

DEFAULT_PORT = 35963
MAX_FRAME = 0xFFFF


class VpcdControl(IntEnum):
    POWER_OFF = 0x00
    POWER_ON = 0x01
    RESET = 0x02
    GET_ATR = 0x04


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError("vpcd frame longer than 65535 bytes")
    return len(payload).to_bytes(2, "big") + payload


@dataclass
class FrameBuffer:
    """Accumulates stream bytes; yields frames only when whole (a short recv is not a frame)."""

    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        if not buf:
            if len(data) >= 2 and len(data) == 2 + ((data[0] << 8) | data[1]):
                return [data[2:]]  # the usual read: exactly one whole frame
            if len(data) == 2:  # vpcd writes a frame's length and its body separately
                buf += data
                return []
        elif len(buf) == 2 and len(data) == (buf[0] << 8) | buf[1]:
            buf.clear()  # ... and this is that body
            return [bytes(data)]
        self._buf += data
        frames = []
        while len(self._buf) >= 2:
            size = int.from_bytes(self._buf[:2], "big")
            if len(self._buf) < 2 + size:
                break
            frames.append(bytes(self._buf[2 : 2 + size]))
            del self._buf[: 2 + size]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


class Card(Protocol):
    """What a card process serves: the applet, or any object with its four verbs."""

    def process(self, command: bytes) -> bytes: ...
    def power_on(self) -> None: ...
    def power_off(self) -> None: ...
    def reset(self) -> None: ...


@dataclass
class CardSide:
    """A card and its ATR, as the socket loop drives them."""

    card: Card
    atr: bytes = ATR

    def handle(self, frame: bytes) -> bytes | None:
        """One vpcd frame in, the reply out (None: no reply expected)."""
        if len(frame) == 1:
            code = frame[0]
            if code == VpcdControl.GET_ATR:
                return self.atr
            if code == VpcdControl.POWER_ON:
                self.card.power_on()
            elif code == VpcdControl.POWER_OFF:
                self.card.power_off()
            elif code == VpcdControl.RESET:
                self.card.reset()
            else:
                log.warning("unknown vpcd control code %02X ignored", code)
            return None
        return self.card.process(frame)


def _is_tcp(sock: socket.socket) -> bool:
    # the private channel to a spawned card is a Unix socketpair: no TCP options there
    return sock.family in (socket.AF_INET, socket.AF_INET6)


# Linux re-arms delayed ACKs after every read; without TCP_QUICKACK before each one, a
# reader that writes a frame's length and body separately (vpcd 0.8) waits 40 ms per APDU.
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def set_quickack(sock: socket.socket) -> None:
    if _QUICKACK is not None and _is_tcp(sock):
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


def tune(sock: socket.socket) -> None:
    if _is_tcp(sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    set_quickack(sock)


def serve_connection(sock: socket.socket, card: CardSide) -> None:
    """Serve one reader connection until it closes (or is shut down: see `StopWatch`).

    A blocking socket: a timeout would put a poll() before every recv and every send."""
    sock.settimeout(None)
    frames = FrameBuffer()
    recv, sendall, handle = sock.recv, sock.sendall, card.handle
    quickack = _QUICKACK if _is_tcp(sock) else None
    setsockopt, tcp = sock.setsockopt, socket.IPPROTO_TCP
    while True:
        if quickack is not None:
            setsockopt(tcp, quickack, 1)
        data = recv(65536)
        if not data:
            raise ConnectionResetError("reader closed the connection")
        for frame in frames.feed(data):
            reply = handle(frame)
            if reply is not None:
                sendall(encode_frame(reply))


class StopWatch:
    """Ends the connection being served once `stop` is set: the serving thread sits in a
    blocking recv, which a shutdown() from here wakes with end-of-stream."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vpcd-stop", daemon=True)
        self._thread.start()

    def serving(self, sock: socket.socket | None) -> None:
        """The socket to shut down on stop (None: between connections)."""
        with self._lock:
            self._sock = sock
        if sock is not None and self._stop.is_set():
            self._shutdown()

    def close(self) -> None:
        """The card is no longer served: the watcher ends within a second, unwaited for."""
        self._done.set()

    def _watch(self) -> None:
        # wakes once a second while idle, only to notice close(); never on an APDU's path
        while not self._stop.wait(1.0):
            if self._done.is_set():
                return
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            if self._sock is not None:
                # already closed by the reader: nothing to wake
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)


@dataclass
class VpcdCard:
    """Connects to a vpcd (pcscd's driver, or the embedded reader) and serves the card;
    reconnects with exponential backoff whenever the reader goes away."""

    card: CardSide
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    stop: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)

    listen: bool = False  # loopback mode: the card listens, vpcd connects out to it
    # a private, already connected channel (a socketpair end from the terminal that
    # started us): served once, no reconnecting; when it closes, the card's life ends
    channel: socket.socket | None = None
    _watch: StopWatch | None = field(default=None, init=False, repr=False)

    def run(self) -> None:
        self._watch = StopWatch(self.stop)
        try:
            self._run()
        finally:
            self._watch.close()

    def _run(self) -> None:
        if self.channel is not None:
            self._serve(self.channel)
            return
        if self.listen:
            self._run_listening()
            return
        delay = self.backoff_initial
        while not self.stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2)
            except OSError as exc:
                log.debug("reader %s:%d not reachable (%s); retry in %.2fs", self.host,
                          self.port, exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff_initial
            self._serve(sock)
            self.stop.wait(self.backoff_initial)

    def _run_listening(self) -> None:
        with socket.create_server((self.host, self.port)) as server:
            server.settimeout(0.5)
            log.info("card listening on %s:%d for a reader", self.host, self.port)
            while not self.stop.is_set():
                try:
                    sock, _ = server.accept()
                except TimeoutError:
                    continue
                self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        log.info("reader connected (%s)", self.where)
        tune(sock)
        self.connected.set()
        assert self._watch is not None  # run() made it
        self._watch.serving(sock)
        try:
            serve_connection(sock, self.card)
        except OSError as exc:
            if self.stop.is_set():
                log.info("stopped: the reader connection is closed")
            elif self.channel is not None:
                log.info("the private channel closed (%s): the card's session is over", exc)
            else:
                log.info("reader connection lost (%s); waiting for it again", exc)
            self.card.card.power_off()  # the card lost power with its reader
        finally:
            self._watch.serving(None)
            self.connected.clear()
            sock.close()

    @property
    def where(self) -> str:
        return "private channel" if self.channel is not None else f"{self.host}:{self.port}"
