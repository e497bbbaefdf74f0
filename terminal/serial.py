"""A T=1 card reader on a serial line (pyserial): reset, ATR, PPS, IFSD, then APDUs.

    SerialReader("/dev/ttyUSB0")            a UART (or a pty: /dev/pts/N)
    SerialReader("socket://127.0.0.1:7000") any pyserial URL

Reset and deactivation are in-band requests on an idle line (card_applet.line, and
docs/serial.md for why a pty needs that). The ATR is read byte by byte until its own
structure says it has ended, checked (TS, TCK, T=1 offered, no specific mode for another
protocol, no reserved Fi/Di, IFSC or BWI), and then the reader sends a PPS for T=1, checks
the answer (ISO/IEC 7816-3 9.3) and sends an S(IFS request) for its IFSD. Only the direct
convention is supported: a card whose TS reads 03 is refused, not half-decoded.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import NoReturn

import serial

from card_applet.atr import Atr, AtrError, Convention, Edc, atr_length, parse_atr
from card_applet.line import (
    DEFAULT_SLACK,
    POWER_OFF_REQUEST,
    RESET_REQUEST,
    LineTiming,
    Pps,
    serial_options,
)
from card_applet.t1 import MAX_INF, epilogue
from terminal.errors import LineProtocolError, NoCardError, ReaderError
from terminal.reader import check_command
from terminal.t1 import ISO_RETRIES, MAX_WTX_WAIT, T1Stats, T1Terminal

log = logging.getLogger(__name__)

ATR_FIRST_BYTE = 0.5  # s: 40,000 clocks is 11 ms; a process on a pty needs longer
RESET_ATTEMPTS = 3
INITIAL_WAITING_TIME = 960 * 10 * 372 / 3_571_200  # WI = 10: 1 s between ATR/PPS bytes
DIRECT_TS, INVERSE_TS = 0x3B, 0x03  # TS as a direct-convention UART reads it (8.1)
MAX_BWI = 9  # TB3 b8..b5: A to F are reserved (11.4.3)


def check_atr(atr: Atr) -> None:
    """What this reader needs of a well-formed ATR: T=1 offered, no specific mode for another
    protocol, and no reserved values in the interface bytes it uses (TA1, TA3, TB3). Raises
    LineProtocolError, so a card with such an ATR is refused like any other broken card,
    rather than an AtrError or ValueError escaping from deep in the activation."""
    if atr.convention is not Convention.DIRECT:
        raise LineProtocolError("inverse convention not supported")
    if 1 not in atr.protocols:
        raise LineProtocolError(f"the card does not offer T=1 "
                                f"(offers T={', T='.join(map(str, atr.protocols))})")
    if atr.specific_mode not in (None, 1):
        raise LineProtocolError(f"card in specific mode T={atr.specific_mode}")
    try:
        atr.fi_di  # noqa: B018 - raises for a reserved TA1
        atr.ifsc  # noqa: B018 - raises for TA3 00 or FF
    except AtrError as exc:
        raise LineProtocolError(f"ATR {atr.raw.hex(' ').upper()}: {exc}") from exc
    if atr.bwi > MAX_BWI:
        raise LineProtocolError(f"ATR {atr.raw.hex(' ').upper()}: BWI {atr.bwi} is reserved")


def check_pps_answer(request: Pps, raw: bytes) -> Pps:
    """The card's answer to `request`, if the exchange succeeded (ISO/IEC 7816-3 9.3): PCK
    right, the protocol echoed, and each of PPS1..PPS3 either echoed or absent (absent PPS1
    means Fd/Dd). A byte that was not requested must not appear. Otherwise the exchange is
    unsuccessful and the caller resets the card: LineProtocolError."""
    shown = raw.hex(" ").upper() or "no answer"
    try:
        answer = Pps.decode(raw)
    except ValueError as exc:
        raise LineProtocolError(f"PPS for T={request.protocol} refused ({shown}: {exc})") from exc
    if answer.protocol != request.protocol:
        raise LineProtocolError(f"PPS answer {shown} does not confirm T={request.protocol}")
    for name in ("pps1", "pps2", "pps3"):
        got, sent = getattr(answer, name), getattr(request, name)
        if got is None or got == sent:
            continue
        why = "not requested" if sent is None else f"not the {sent:02X} requested"
        raise LineProtocolError(f"PPS answer {shown}: {name.upper()} {got:02X} {why}")
    return answer


class _SerialLink:
    """pyserial as a `BlockLink`: one block per receive, cut by LEN, ended early by CWT."""

    def __init__(self, port: serial.SerialBase, timing: LineTiming, edc: Edc = Edc.LRC) -> None:
        self.port, self.timing, self.edc = port, timing, edc
        self.edc_size = 2 if edc is Edc.CRC else 1

    def send(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read_until_quiet(self, first: float, size: int) -> bytes:
        """Up to `size` bytes: the first within `first` s, each next within CWT."""
        self.port.timeout = first
        data = bytearray(self.port.read(1))
        self.port.timeout = self.timing.cwt
        while data and len(data) < size:
            chunk = self.port.read(size - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def drain(self) -> None:
        """Discard input until the line has been quiet for CWT."""
        self.port.timeout = self.timing.cwt
        while self.port.read(4096):
            pass

    def receive(self, timeout: float) -> bytes | None:
        head = self.read_until_quiet(timeout, 3)
        if not head:
            return None
        if len(head) < 3 or head[2] == 0xFF:
            self.drain()
            return head
        raw = head + self.read_until_quiet(self.timing.cwt, head[2] + self.edc_size)
        if len(raw) < 3 + head[2] + self.edc_size:
            self.drain()  # the block stopped: whatever follows belongs to no block
        elif epilogue(self.edc, raw[: -self.edc_size]) != raw[-self.edc_size :]:
            # LEN may be what was corrupted: the block's real tail must not be read as the
            # next block (one bad block, one R-block from us)
            self.drain()
        return raw


class SerialReader:
    extended_length = True  # T=1 chains any length; the applet takes extended APDUs

    def __init__(self, url: str, *, baudrate: int = 9600, ifsd: int = MAX_INF,
                 max_retries: int = ISO_RETRIES, slack: float = DEFAULT_SLACK,
                 pps: bool = True, max_wtx_wait: float = MAX_WTX_WAIT) -> None:
        self.url, self.ifsd, self.max_retries = url, ifsd, max_retries
        self.max_wtx_wait = max_wtx_wait  # per command: a card asking for WTX forever stops
        self.slack, self.use_pps = slack, pps
        self.name = f"serial {url}"
        try:
            self.port = serial.serial_for_url(url, timeout=0.1, **serial_options(url, baudrate))
        except (serial.SerialException, ValueError) as exc:
            raise ReaderError(f"cannot open serial line {url}: {exc}") from exc
        self.timing = LineTiming(slack=slack)
        self._atr = b""
        self.parsed: Atr | None = None
        self.pps: Pps | None = None
        self.t1: T1Terminal | None = None
        self.stats = T1Stats()

    # -- activation -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except serial.SerialException as exc:
            raise ReaderError(f"{self.name}: {exc}") from exc

    def _read_atr(self) -> bytes:
        self.port.timeout = ATR_FIRST_BYTE + self.slack
        raw = bytearray()
        while True:
            byte = self.port.read(1)
            if not byte:
                break
            if not raw and byte[0] not in (DIRECT_TS, INVERSE_TS):
                continue  # line noise before TS
            raw += byte
            if raw[0] == INVERSE_TS:
                break  # the rest means nothing without decoding: _activate refuses the card
            length = atr_length(bytes(raw))
            if length is not None and len(raw) >= length:
                break
            self.port.timeout = INITIAL_WAITING_TIME + self.slack
        return bytes(raw)

    def _activate(self, request: bytes) -> bytes:
        self.t1 = None
        link = _SerialLink(self.port, self.timing)
        error = ""  # why the last attempt failed, "" for no ATR at all
        for _attempt in range(RESET_ATTEMPTS):
            link.drain()  # the request must start at a block boundary (card_applet.line)
            self._write(request)
            raw = self._read_atr()
            if not raw:
                error = ""
                continue
            if raw[0] == INVERSE_TS:
                # every byte would need decoding (8.1), the ATR's length included
                self._refuse("the card's TS is 03: inverse convention not supported")
            try:
                parsed = parse_atr(raw)
            except AtrError as exc:
                error = f"{self.name}: bad ATR {raw.hex(' ').upper()}: {exc}"
                continue
            try:
                check_atr(parsed)
            except LineProtocolError as exc:  # a well-formed ATR we cannot use: a reset
                self._refuse(str(exc))  # would not change it
            try:
                self._start_t1(parsed)
            except LineProtocolError as exc:  # PPS or S(IFS) lost on a noisy line: reset
                self.t1, error = None, str(exc)  # (the message names this reader)
                continue
            return self._atr
        if not error:
            raise NoCardError(f"no card on {self.name}: no ATR after {RESET_ATTEMPTS} resets")
        self._deactivate()  # 9.3: a card that keeps failing its PPS is not left powered
        raise LineProtocolError(error)

    def _refuse(self, why: str) -> NoReturn:
        self._deactivate()
        raise LineProtocolError(f"{self.name}: {why}")

    def _deactivate(self) -> None:
        _SerialLink(self.port, self.timing).drain()
        self._write(POWER_OFF_REQUEST)
        self.t1 = None

    def _start_t1(self, atr: Atr) -> None:
        self.parsed, self._atr = atr, atr.raw
        self.timing = LineTiming.from_atr(atr, slack=self.slack)
        if self.use_pps and atr.specific_mode is None:
            self._negotiate_pps(atr)
        self.t1 = T1Terminal(_SerialLink(self.port, self.timing, atr.edc), ifsc=atr.ifsc,
                             edc=atr.edc, bwt=self.timing.bwt, max_retries=self.max_retries,
                             name=self.name, max_wtx_wait=self.max_wtx_wait)
        self.t1.stats = self.stats
        self.t1.negotiate_ifsd(self.ifsd)

    def _negotiate_pps(self, atr: Atr) -> None:
        """PPS for T=1 at the card's Fi/Di from TA1 (9.2); the answer must echo it (9.3)."""
        fi_di_byte = atr.groups[0].ta
        request = Pps(1, fi_di_byte)
        self._write(request.encode())
        self.port.timeout = INITIAL_WAITING_TIME + self.slack
        raw = self.port.read(2)
        expected = Pps.length(raw)
        if expected is not None:
            raw += self.port.read(expected - len(raw))
        try:
            answer = check_pps_answer(request, raw)
        except LineProtocolError as exc:
            raise LineProtocolError(f"{self.name}: {exc}") from exc
        self.pps = answer
        fi_di = answer.fi_di  # None, or TA1's (check_atr: not reserved)
        if fi_di is not None and fi_di != (372, 1):
            self.timing = LineTiming.from_atr(atr, fi_di, slack=self.slack)
            self.port.baudrate = self.timing.baudrate

    def wait_for_card(self, timeout: float = 15.0) -> bytes:
        """Reset until a card answers (a card process may still be starting); its ATR."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.power_on()
            except ReaderError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    # -- Reader -----------------------------------------------------------------------------

    def power_on(self) -> bytes:
        return self._activate(RESET_REQUEST)

    def reset(self) -> bytes:
        return self._activate(RESET_REQUEST)

    def power_off(self) -> None:
        if self.t1 is not None:
            self._deactivate()
        self.t1 = None

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        check_command(apdu)
        if self.t1 is None:
            self.power_on()
        assert self.t1 is not None
        started = time.monotonic()
        try:
            # Between commands the card never speaks unprompted: anything waiting is a late
            # repeat of an answer we already have, and must not pass for the next one.
            self.port.reset_input_buffer()
            response = self.t1.transceive(apdu)
        except ReaderError:
            self.t1 = None  # the next command starts with a reset
            raise
        except serial.SerialException as exc:
            self.t1 = None
            raise ReaderError(f"{self.name}: {exc}") from exc
        log.debug("%s: %d-byte APDU in %.1f ms", self.name, len(apdu),
                  1000 * (time.monotonic() - started))
        if len(response) < 2:
            raise LineProtocolError(f"{self.name}: response of {len(response)} bytes, no SW")
        return response

    def close(self) -> None:
        with contextlib.suppress(ReaderError, serial.SerialException):
            self.power_off()
        self.port.close()
