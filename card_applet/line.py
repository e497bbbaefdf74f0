"""The serial line shared by card and reader: timing, PPS, and how reset travels on a pty.

A UART carries ISO/IEC 7816-3 characters as 8 data bits, even parity and two stop bits
(one start bit + 8 + parity + 2 etu of guard time = 12 etu, enough for the ATR's CGT).
A pty has no RST line, and Linux ignores BREAK on it (TCSBRK is a no-op without
`break_ctl`), so reset and deactivation travel in-band, as byte sequences that are never a
T=1 block's prologue nor a PPS request:

    FF 52 53 54   ("\\xffRST")  reset: the card drops its volatile state and sends its ATR
    FF 4F 46 46   ("\\xffOFF")  deactivation: the card drops its volatile state and is silent

FF as a block's first byte would be NAD FF (VPP bits set, SAD = DAD: reserved), and after
an ATR, FF starts a PPS whose PPS0 is 52 (T=2, reserved) or 4F (T=15, not a protocol): so
the card tells them apart from the first two bytes. The terminal only sends them on an idle
line (after CWT of silence) so they always start at a block boundary. See docs/serial.md.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import Enum

from card_applet.atr import DI_TABLE, FI_TABLE, Atr, xor

RESET_REQUEST = b"\xffRST"
POWER_OFF_REQUEST = b"\xffOFF"
PPSS = 0xFF
DEFAULT_CLOCK_HZ = 3_571_200  # 9,600 bit/s at Fd = 372, Dd = 1
DEFAULT_SLACK = 0.05  # s: OS scheduling and USB-serial latency timers (FTDI: 16 ms)


PTY_MAJORS = range(136, 144)  # Linux Unix98 pty slaves (Documentation/admin-guide/devices)


def is_pty(device: str) -> bool:
    try:
        st = os.stat(device)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_MAJORS


def serial_options(device: str, baudrate: int = 9600) -> dict[str, object]:
    """pyserial settings for a card line: 8E2 on a UART. A pty or a pyserial URL carries
    bytes, not characters, so parity means nothing there (and Linux refuses to reconfigure
    a pty with PARENB set: every later timeout change would fail with EINVAL)."""
    uart = "://" not in device and not is_pty(device)
    return {"baudrate": baudrate, "bytesize": 8, "parity": "E" if uart else "N",
            "stopbits": 2 if uart else 1}


class Marker(Enum):
    RESET = RESET_REQUEST
    POWER_OFF = POWER_OFF_REQUEST


@dataclass(frozen=True, slots=True)
class LineTiming:
    """Baud rate and T=1 timers from the ATR (ISO/IEC 7816-3 7.1, 11.4.3), in seconds,
    with `slack` added to every timer a receiver enforces."""

    fi: int = 372
    di: int = 1
    clock_hz: int = DEFAULT_CLOCK_HZ
    cwi: int = 5
    bwi: int = 4
    slack: float = DEFAULT_SLACK
    wi: int = 10  # T=0 waiting time integer (TC2, 10 by default)

    @classmethod
    def from_atr(cls, atr: Atr, fi_di: tuple[int, int] = (372, 1),
                 clock_hz: int = DEFAULT_CLOCK_HZ, slack: float = DEFAULT_SLACK) -> LineTiming:
        return cls(fi_di[0], fi_di[1], clock_hz, atr.cwi, atr.bwi, slack, atr.wi)

    @property
    def etu(self) -> float:
        return self.fi / (self.di * self.clock_hz)

    @property
    def baudrate(self) -> int:
        return round(1 / self.etu)

    @property
    def cwt(self) -> float:
        """Character waiting time: (11 + 2^CWI) etu."""
        return (11 + (1 << self.cwi)) * self.etu + self.slack

    @property
    def bwt(self) -> float:
        """Block waiting time: 11 etu + 2^BWI x 960 x 372 / f (Fd, not Fi: 11.4.3)."""
        return 11 * self.etu + (1 << self.bwi) * 960 * 372 / self.clock_hz + self.slack

    @property
    def wwt(self) -> float:
        """T=0 work waiting time: 960 x WI x Fi / f (10.2), the longest gap between a
        character and the one before it, in either direction."""
        return 960 * self.wi * self.fi / self.clock_hz + self.slack

    @property
    def t1_char_rate(self) -> float:
        """Bytes per second the line can carry in T=1: 11 etu per character at CGT = 11."""
        return 1 / (11 * self.etu)


@dataclass(frozen=True, slots=True)
class Pps:
    """A PPS request or response (ISO/IEC 7816-3 9): protocol, optional PPS1 (Fi/Di)."""

    protocol: int
    pps1: int | None = None
    pps2: int | None = None
    pps3: int | None = None

    def encode(self) -> bytes:
        pps0 = self.protocol & 0x0F
        body = bytearray()
        for bit, value in ((0x10, self.pps1), (0x20, self.pps2), (0x40, self.pps3)):
            if value is not None:
                pps0 |= bit
                body.append(value)
        raw = bytes((PPSS, pps0)) + bytes(body)
        return raw + bytes((xor(raw),))

    @staticmethod
    def length(raw: bytes) -> int | None:
        """The length of the PPS starting in raw, None until PPS0 is there."""
        if len(raw) < 2:
            return None
        return 3 + bin(raw[1] & 0x70).count("1")

    @classmethod
    def decode(cls, raw: bytes) -> Pps:
        if len(raw) < 3 or raw[0] != PPSS or cls.length(raw) != len(raw):
            raise ValueError(f"malformed PPS {raw.hex(' ').upper()}")
        if xor(raw) != 0:
            raise ValueError("PPS check byte PCK wrong")
        if raw[1] & 0x80:
            raise ValueError(f"PPS0 {raw[1]:02X}: b8 is reserved")  # 9.2: RFU, set to 0
        pps0, rest = raw[1], list(raw[2:-1])
        values = [rest.pop(0) if pps0 & bit else None for bit in (0x10, 0x20, 0x40)]
        return cls(pps0 & 0x0F, *values)

    @property
    def fi_di(self) -> tuple[int, int] | None:
        if self.pps1 is None:
            return None
        fi, di = FI_TABLE[self.pps1 >> 4], DI_TABLE[self.pps1 & 0x0F]
        if fi is None or di is None:
            raise ValueError(f"PPS1 {self.pps1:02X} uses reserved Fi/Di values")
        return fi[0], di


def answer_pps(request: Pps, offered: tuple[int, ...], max_fi_di: tuple[int, int]) -> Pps | None:
    """The card's answer (9.3): None (silence) for a protocol it does not offer; PPS1 echoed
    when the card can run at that Fi/Di, left out (meaning Fd/Dd) when it cannot."""
    if request.protocol not in offered:
        return None
    pps1 = request.pps1
    if pps1 is not None:
        try:
            wanted = request.fi_di
        except ValueError:
            wanted = None
        if wanted is None or wanted[0] != max_fi_di[0] or wanted[1] > max_fi_di[1]:
            pps1 = None
    return Pps(request.protocol, pps1)
