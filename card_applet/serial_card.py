"""The card on a serial line: ATR on reset, PPS, then T=1 or T=0 around the applet.

    python -m card_applet.serve --state card.json --serial /dev/pts/7 [--protocol t0|both]

`LineFramer` is sans-IO: bytes and the time go in, line events come out (a reset or
deactivation request, a PPS request, a whole block, or an invalid one once the line has
gone quiet; under T=0, the characters of the TPDU in progress). `SerialCard` is the loop: it
reads the port, feeds the framer and the protocol engine (`T1Card` or `T0Card`, whichever
the ATR's default or the PPS selected), runs the applet on a worker thread so it can keep
the reader waiting (S(WTX) under T=1, NULL bytes under T=0) while a slow command runs, and
writes what the engine says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from card_applet.atr import ATR, Edc, parse_atr
from card_applet.line import PPSS, LineTiming, Marker, Pps, answer_pps
from card_applet.sw import SW
from card_applet.t0 import T0Card
from card_applet.t1 import CardOutput, RError, T1Card, epilogue

log = logging.getLogger(__name__)


class Event(Enum):
    RESET = "reset"
    POWER_OFF = "power off"
    PPS = "pps"
    BLOCK = "block"
    INVALID = "invalid"
    CHARS = "chars"  # T=0: bytes of the TPDU in progress


@dataclass
class LineFramer:
    """Cuts the card's input into line events. A block's end is known from LEN; a block
    whose characters stop for CWT, whose EDC fails, or bytes that cannot start one, are
    invalid: reported once the line has been quiet for CWT, so a burst of garbage costs one
    R-block. (A block whose LEN was corrupted downward fails its EDC, and the rest of it is
    drained with it rather than read as a second block that earns a second answer.)"""

    cwt: float
    edc: Edc = Edc.LRC
    powered: bool = False
    pps_allowed: bool = False  # only the first exchange after an ATR may be a PPS
    #: set while T=0 runs: it says where a TPDU's bytes end, so that an FF inside a TPDU is
    #: data, and FF at a TPDU boundary starts a line request (CLA FF is invalid, 10.3.2)
    t0: T0Card | None = None
    _buf: bytearray = field(default_factory=bytearray)
    _last: float = 0.0
    _draining: bool = False

    def feed(self, data: bytes, now: float) -> list[tuple[Event, bytes]]:
        events: list[tuple[Event, bytes]] = []
        if data:
            self._last = now
        self._buf += data
        while self._buf:
            if not self.powered or self._draining:
                # an unpowered card hears nothing but a reset; a draining one waits for quiet
                at = self._buf.find(Marker.RESET.value)
                if at < 0:
                    keep = len(Marker.RESET.value) - 1
                    del self._buf[: max(0, len(self._buf) - keep)]
                    break
                del self._buf[:at]
            event = self._next()
            if event is None:
                if self._draining:
                    continue  # what is left is drained (a reset request is still heard)
                break
            events.append(event)
        return events

    def poll(self, now: float) -> list[tuple[Event, bytes]]:
        """Call when no byte came: an unfinished block or a drain ends after CWT of quiet."""
        if now - self._last < self.cwt or not self.powered:
            return []
        if self._draining or self._buf:
            self._buf.clear()
            self._draining = False
            return [(Event.INVALID, b"")]
        return []

    @property
    def edc_size(self) -> int:
        return 2 if self.edc is Edc.CRC else 1

    def _take(self, size: int) -> bytes:
        raw = bytes(self._buf[:size])
        del self._buf[:size]
        return raw

    def _next(self) -> tuple[Event, bytes] | None:
        buf = self._buf
        t0 = self.t0
        if buf[0] == PPSS and (t0 is None or t0.at_boundary):
            if len(buf) < 2:
                return None
            for marker in Marker:
                if buf[1] == marker.value[1]:
                    if len(buf) < len(marker.value):
                        return None
                    if buf[: len(marker.value)] == marker.value:
                        self._take(len(marker.value))
                        self.powered = marker is Marker.RESET
                        self._draining = False
                        return (Event.RESET if marker is Marker.RESET else Event.POWER_OFF,
                                b"")
            if self.pps_allowed:
                size = Pps.length(buf)
                if size is None or len(buf) < size:
                    return None
                self.pps_allowed = False
                return Event.PPS, self._take(size)
            self._draining = True  # NAD FF: no block starts so
            return None
        if t0 is not None:
            self.pps_allowed = False
            if not t0.wanted:
                self._draining = True  # bytes while we work: the reader broke half duplex
                return None
            return Event.CHARS, self._take(min(t0.wanted, len(buf)))
        if len(buf) < 3:
            return None
        if buf[2] == 0xFF:
            self._draining = True
            return None
        size = 3 + buf[2] + self.edc_size
        if len(buf) < size:
            return None
        self.pps_allowed = False
        body = bytes(buf[: size - self.edc_size])
        if epilogue(self.edc, body) != buf[size - self.edc_size : size]:
            self._draining = True  # its real end is unknown: wait for quiet, answer once
            return None
        return Event.BLOCK, self._take(size)


class Port(Protocol):
    """The part of pyserial's Serial the card uses."""

    timeout: float | None
    baudrate: int

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def flush(self) -> None: ...
    def reset_input_buffer(self) -> None: ...
    @property
    def in_waiting(self) -> int: ...


class Applet(Protocol):
    def process(self, command: bytes) -> bytes: ...
    def reset(self) -> None: ...
    def power_off(self) -> None: ...


@dataclass
class SerialCard:
    """Serves `applet` on `port` until `stop` is set."""

    applet: Applet
    port: Port
    stop: threading.Event = field(default_factory=threading.Event)
    atr: bytes = ATR
    slack: float = 0.05
    #: test facility: seconds a command takes before the applet runs (by its bytes)
    command_delay: Callable[[bytes], float] = lambda _command: 0.0
    poll_interval: float = 0.005
    #: test facility: under T=0, move data one byte per procedure byte (INS ^ FF)
    t0_byte_by_byte: bool = False

    def __post_init__(self) -> None:
        parsed = parse_atr(self.atr)
        self.timing = LineTiming.from_atr(parsed, parsed.fi_di, slack=self.slack)
        self.offered = parsed.protocols
        self.max_fi_di = parsed.fi_di
        self.engine = T1Card(ifsc=parsed.ifsc, edc=parsed.edc)
        self.t0 = T0Card(byte_by_byte=self.t0_byte_by_byte)
        self.protocol = self.offered[0]
        self.framer = LineFramer(self.timing.cwt, parsed.edc)
        self._last_rx = 0.0
        self.resets = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="applet")
        self._running: tuple[Future[bytes], int] | None = None
        self._wtx_at = 0.0

    def run(self) -> None:
        self.port.timeout = self.poll_interval
        # a card that just got power remembers nothing the line carried before
        self.port.reset_input_buffer()
        log.info("card on the serial line; waiting for a reset")
        try:
            while not self.stop.is_set():
                data = self.port.read(1)  # returns at the first byte, or after the poll
                waiting = self.port.in_waiting if data else 0
                if waiting:
                    data += self.port.read(waiting)
                now = time.monotonic()
                if data:
                    self._last_rx = now
                events = self.framer.feed(data, now) if data else self.framer.poll(now)
                for event, raw in events:
                    self._on_event(event, raw)
                if self.protocol == 0 and now - self._last_rx >= self.timing.wwt \
                        and self.t0.abandon():
                    log.info("T=0: the reader fell silent mid-command for WWT; dropped")
                self._tend_command(now)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- events -----------------------------------------------------------------------------

    def _settle(self) -> None:
        """A reset or deactivation cannot interrupt a Python call: let the running command
        finish first (its answer goes to no one), so the applet's volatile state is never
        reset under it. Else a VERIFY ending after a reset would leave the PIN verified."""
        if self._running is not None:
            wait([self._running[0]])
            self._running = None

    def _select(self, protocol: int) -> None:
        self.protocol = protocol
        self.framer.t0 = self.t0 if protocol == 0 else None

    def _on_event(self, event: Event, raw: bytes) -> None:
        if event is Event.RESET:
            self.resets += 1
            self._settle()
            self.applet.reset()
            self.engine.reset()
            self.t0.reset()
            self._select(self.offered[0])  # the default protocol until a PPS says otherwise
            self.framer.pps_allowed = True
            self._write(self.atr)
            log.debug("reset: ATR sent")
        elif event is Event.POWER_OFF:
            self._settle()
            self.applet.power_off()
            self.engine.reset()
            self.t0.reset()
        elif event is Event.PPS:
            self._on_pps(raw)
        elif event is Event.BLOCK:
            self._act(self.engine.receive(raw))
        elif event is Event.CHARS:
            self._act(self.t0.receive(raw))
        elif self.protocol == 1:
            self._write(self.engine.receive_invalid(RError.EDC).send)
        # T=0 has no answer to garbage: the reader's WWT runs out

    def _act(self, out: CardOutput) -> None:
        self._write(out.send)
        if out.execute is not None:
            self._start(out.execute)

    def _on_pps(self, raw: bytes) -> None:
        try:
            request = Pps.decode(raw)
        except ValueError as exc:
            log.info("PPS refused (%s): staying silent", exc)
            return
        answer = answer_pps(request, self.offered, self.max_fi_di)
        if answer is None:
            log.info("PPS for T=%d refused: not offered", request.protocol)
            return
        self._write(answer.encode())
        self._select(answer.protocol)
        fi_di = answer.fi_di
        if fi_di is not None and fi_di != (self.timing.fi, self.timing.di):
            self.timing = LineTiming(fi_di[0], fi_di[1], self.timing.clock_hz,
                                     self.timing.cwi, self.timing.bwi, self.slack,
                                     self.timing.wi)
            self.port.baudrate = self.timing.baudrate

    # -- the applet, on its own thread ------------------------------------------------------

    @property
    def _keepalive(self) -> float:
        """How often a running command keeps the reader waiting: half its timer."""
        return (self.timing.wwt if self.protocol == 0 else self.timing.bwt) / 2

    def _start(self, command: bytes) -> None:
        generation = (self.t0 if self.protocol == 0 else self.engine).generation

        def run() -> bytes:
            # Whatever goes wrong here must still answer the terminal: an exception left in
            # the future would be raised by the card loop and stop the card.
            try:
                delay = self.command_delay(command)
                if delay:
                    time.sleep(delay)
                return self.applet.process(command)
            except Exception:
                log.exception("the applet failed on command %s", command[:5].hex())
                return SW.UNKNOWN.to_bytes(2, "big")

        future = self._pool.submit(run)
        self._running = (future, generation)
        # ask for more time well before the terminal's BWT (WWT) runs out
        self._wtx_at = time.monotonic() + self._keepalive
        # The terminal is silent while we work (half duplex), so wait for the applet here
        # rather than poll it between reads; only a reset could come, and it waits.
        wait([future], timeout=self._keepalive)
        self._tend_command(time.monotonic())

    def _tend_command(self, now: float) -> None:
        if self._running is None:
            return
        future, generation = self._running
        t0 = self.protocol == 0
        if future.done():
            self._running = None
            engine = self.t0 if t0 else self.engine
            self._write(engine.executed(future.result(), generation).send)
        elif now >= self._wtx_at:
            # one BWT (WWT) more each time: the terminal's wait restarts at our request
            self._write((self.t0.null() if t0 else self.engine.request_wtx(1)).send)
            self._wtx_at = now + self._keepalive

    def _write(self, data: bytes) -> None:
        if data:
            self.port.write(data)
            self.port.flush()
