"""A T=1 or T=0 card reader on a serial line (pyserial): reset, ATR, PPS, then APDUs.

    SerialReader("/dev/ttyUSB0")               a UART (or a pty: /dev/pts/N), T=1
    SerialReader("/dev/ttyUSB0", protocol=0)   the same line, T=0
    SerialReader("socket://127.0.0.1:7000")    any pyserial URL

Reset and deactivation are in-band requests on an idle line (card_applet.line, and
docs/serial.md for why a pty needs that). The ATR is read byte by byte until its own
structure says it has ended, checked (TS, TCK, the protocol offered, no specific mode for
another protocol, no reserved Fi/Di, IFSC, BWI or WI), and then the reader sends a PPS for
its protocol, checks the answer (ISO/IEC 7816-3 9.3) and, under T=1, sends an S(IFS
request) for its IFSD. Only the direct convention is supported: a card whose TS reads 03 is
refused, not half-decoded.
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
from terminal.errors import ApduNotMappableError, LineProtocolError, NoCardError, ReaderError
from terminal.reader import check_command
from terminal.t0 import MAX_NULL_WAIT, T0Stats, T0Terminal
from terminal.t1 import ISO_RETRIES, MAX_WTX_WAIT, T1Stats, T1Terminal

log = logging.getLogger(__name__)

ATR_FIRST_BYTE = 0.5  # s: 40,000 clocks is 11 ms; a process on a pty needs longer
RESET_ATTEMPTS = 3
INITIAL_WAITING_TIME = 960 * 10 * 372 / 3_571_200  # WI = 10: 1 s between ATR/PPS bytes
DIRECT_TS, INVERSE_TS = 0x3B, 0x03  # TS as a direct-convention UART reads it (8.1)
MAX_BWI = 9  # TB3 b8..b5: A to F are reserved (11.4.3)


def check_atr(atr: Atr, protocol: int = 1) -> None:
    """What this reader needs of a well-formed ATR: `protocol` offered, no specific mode for
    another protocol, and no reserved values in the interface bytes it uses (TA1, TC2, and
    TA3, TB3 for T=1: a T=0 reader does not refuse a card for its T=1 parameters). Raises
    LineProtocolError, so a card with such an ATR is refused like any other broken card,
    rather than an AtrError or ValueError escaping from deep in the activation."""
    if atr.convention is not Convention.DIRECT:
        raise LineProtocolError("inverse convention not supported")
    if protocol not in atr.protocols:
        raise LineProtocolError(f"the card does not offer T={protocol} "
                                f"(offers T={', T='.join(map(str, atr.protocols))})")
    if atr.specific_mode not in (None, protocol):
        raise LineProtocolError(f"card in specific mode T={atr.specific_mode}")
    try:
        atr.fi_di  # noqa: B018 - raises for a reserved TA1
        atr.wi  # noqa: B018 - raises for TC2 00 (LineTiming reads it whatever the protocol)
        if protocol == 1:
            atr.ifsc  # noqa: B018 - raises for TA3 00 or FF
    except AtrError as exc:
        raise LineProtocolError(f"ATR {atr.raw.hex(' ').upper()}: {exc}") from exc
    if protocol == 1 and atr.bwi > MAX_BWI:
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

    def read(self, size: int, timeout: float) -> bytes:
        """T=0's `ByteLink`: up to `size` bytes, each within `timeout` (WWT)."""
        self.port.timeout = timeout
        data = bytearray()
        while len(data) < size:
            chunk = self.port.read(size - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)

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

    def discard_for(self, seconds: float) -> None:
        """Read and discard whatever comes for `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.port.timeout = left
            self.port.read(4096)

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
    def __init__(self, url: str, *, baudrate: int = 9600, ifsd: int = MAX_INF,
                 max_retries: int = ISO_RETRIES, slack: float = DEFAULT_SLACK,
                 pps: bool = True, max_wtx_wait: float = MAX_WTX_WAIT, protocol: int = 1,
                 max_null_wait: float = MAX_NULL_WAIT) -> None:
        if protocol not in (0, 1):
            raise ValueError(f"protocol T={protocol}: the serial reader speaks T=0 or T=1")
        self.url, self.ifsd, self.max_retries = url, ifsd, max_retries
        self.max_wtx_wait = max_wtx_wait  # per command: a card asking for WTX forever stops
        self.max_null_wait = max_null_wait  # the same for T=0's NULL bytes
        self.slack, self.use_pps, self.protocol = slack, pps, protocol
        # T=1 chains any length and the applet takes extended APDUs; T=0 carries short
        # APDUs only (no ENVELOPE), so the APDU layer chains and uses GET RESPONSE
        self.extended_length = protocol == 1
        self.name = f"serial {url}" + (" (T=0)" if protocol == 0 else "")
        try:
            self.port = serial.serial_for_url(url, timeout=0.1, **serial_options(url, baudrate))
        except (serial.SerialException, ValueError) as exc:
            raise ReaderError(f"cannot open serial line {url}: {exc}") from exc
        self.timing = LineTiming(slack=slack)
        self._atr = b""
        self.parsed: Atr | None = None
        self.pps: Pps | None = None
        self.t1: T1Terminal | None = None
        self.t0: T0Terminal | None = None
        self.stats = T1Stats()
        self.t0_stats = T0Stats()
        # after a T=0 command failed, the card may still wait for the rest of a TPDU: it
        # drops that after WWT of quiet, so the next reset waits that long first
        self._quiet_first = False

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

    @property
    def active(self) -> bool:
        return self.t1 is not None or self.t0 is not None

    def _activate(self, request: bytes) -> bytes:
        self.t1 = self.t0 = None
        link = _SerialLink(self.port, self.timing)
        if self._quiet_first:
            # the card drops a half-received TPDU after WWT without a byte from us: send
            # nothing for that long (reading what comes meanwhile; a card still sending
            # NULLs cannot stretch this)
            link.discard_for(self.timing.wwt)
            self._quiet_first = False
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
                check_atr(parsed, self.protocol)
                if (not self.use_pps or parsed.specific_mode is not None) and \
                        parsed.protocols[0] != self.protocol:
                    raise LineProtocolError(
                        f"the card speaks T={parsed.protocols[0]} without a PPS, and this "
                        f"reader is told not to send one (it speaks T={self.protocol})")
            except LineProtocolError as exc:  # a well-formed ATR we cannot use: a reset
                self._refuse(str(exc))  # would not change it
            try:
                self._start_protocol(parsed)
            except LineProtocolError as exc:  # PPS or S(IFS) lost on a noisy line: reset
                self.t1, self.t0, error = None, None, str(exc)  # (the message names us)
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
        self.t1 = self.t0 = None

    def _start_protocol(self, atr: Atr) -> None:
        self.parsed, self._atr = atr, atr.raw
        self.timing = LineTiming.from_atr(atr, slack=self.slack)
        if self.use_pps and atr.specific_mode is None:
            self._negotiate_pps(atr)
        if self.protocol == 0:
            self.t0 = T0Terminal(_SerialLink(self.port, self.timing), wwt=self.timing.wwt,
                                 name=self.name, max_null_wait=self.max_null_wait)
            self.t0.stats = self.t0_stats
            return
        self.t1 = T1Terminal(_SerialLink(self.port, self.timing, atr.edc), ifsc=atr.ifsc,
                             edc=atr.edc, bwt=self.timing.bwt, max_retries=self.max_retries,
                             name=self.name, max_wtx_wait=self.max_wtx_wait)
        self.t1.stats = self.stats
        self.t1.negotiate_ifsd(self.ifsd)

    def _negotiate_pps(self, atr: Atr) -> None:
        """PPS for our protocol at the card's Fi/Di from TA1 (9.2); the answer must echo it
        (9.3)."""
        fi_di_byte = atr.groups[0].ta
        request = Pps(self.protocol, fi_di_byte)
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
        if self.active:
            self._deactivate()
        self.t1 = self.t0 = None

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        check_command(apdu)
        if not self.active:
            self.power_on()
        started = time.monotonic()
        try:
            # Between commands the card never speaks unprompted: anything waiting is a late
            # repeat of an answer we already have, and must not pass for the next one.
            self.port.reset_input_buffer()
            if self.t0 is not None:
                response = self.t0.transceive(apdu)
            else:
                assert self.t1 is not None
                response = self.t1.transceive(apdu)
        except ApduNotMappableError:
            raise  # refused before a byte was sent: the card is as it was
        except ReaderError:
            self._lost()  # the next command starts with a reset
            raise
        except serial.SerialException as exc:
            self._lost()
            raise ReaderError(f"{self.name}: {exc}") from exc
        log.debug("%s: %d-byte APDU in %.1f ms", self.name, len(apdu),
                  1000 * (time.monotonic() - started))
        if len(response) < 2:
            raise LineProtocolError(f"{self.name}: response of {len(response)} bytes, no SW")
        return response

    def _lost(self) -> None:
        self._quiet_first = self.t0 is not None
        self.t1 = self.t0 = None

    def close(self) -> None:
        with contextlib.suppress(ReaderError, serial.SerialException):
            self.power_off()
        self.port.close()
