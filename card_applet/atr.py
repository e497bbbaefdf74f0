"""The card's Answer-To-Reset, and an ATR parser both sides use (ISO/IEC 7816-3 8.2).

The card's ATR:

    3B        TS   direct convention
    8B        T0   TD1 follows; 11 historical bytes
    81        TD1  TD2 follows; T=1
    31        TD2  TA3, TB3 follow; T=1
    FE        TA3  IFSC = 254
    45        TB3  BWI = 4, CWI = 5
    80        historical: category indicator, compact-TLV follows (ISO 7816-4 8.1.1)
    73 00 00 C0     card capabilities: command chaining, extended Lc/Le
    55 6E 65 74 74 78  card issuer's data: "nettx"
    xx        TCK  XOR of T0..last historical byte (required when T=1 is offered)

No TA1: the card runs at Fd = 372, Dd = 1 (9,600 bit/s at 3.5712 MHz). No TC3: LRC. On a
serial line the card can announce CRC instead (`--crc`: TD2 71, TC3 01), for noisy lines
where LRC is too weak: two corrupted bytes whose changes XOR to zero pass an LRC.

On a serial line the card can also offer T=0 (docs/serial.md): `ATR_DUAL` offers T=0 first
(TD1 80, the default protocol) and T=1 (TD2 31 and its TA3 TB3), so a PPS picks one;
`ATR_T0` offers T=0 only (no TD1, hence no TCK), and its card capabilities leave out
extended Lc/Le, which T=0 cannot carry without ENVELOPE.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import reduce

HISTORICAL_BYTES = bytes.fromhex("80 73 00 00 C0") + bytes((0x55,)) + b"nettx"
# the same, card capabilities 80: command chaining but no extended Lc/Le (T=0 only)
HISTORICAL_BYTES_T0 = bytes.fromhex("80 73 00 00 80") + bytes((0x55,)) + b"nettx"


def build_atr(historical: bytes = HISTORICAL_BYTES, ifsc: int = 0xFE, bwi_cwi: int = 0x45,
              crc: bool = False, protocols: tuple[int, ...] = (1,)) -> bytes:
    """The card's ATR; `crc` adds TC3 = 01 (TD2 71): T=1 blocks end in a CRC, not an LRC.
    `protocols`: (1,) T=1 only, (0, 1) T=0 by default and T=1 by PPS, (0,) T=0 only."""
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    if protocols == (0,):
        if crc:
            raise ValueError("CRC is a T=1 epilogue; a T=0 only ATR has no TC3")
        return b"\x3b" + bytes((len(historical),)) + historical  # no TD1: T=0; no TCK
    if protocols not in ((1,), (0, 1)):
        raise ValueError(f"protocols {protocols}: (1,), (0, 1) or (0,)")
    t1 = (0x71, ifsc, bwi_cwi, 0x01) if crc else (0x31, ifsc, bwi_cwi)
    td1 = 0x81 if protocols == (1,) else 0x80  # TD2 follows; T=1, or T=0 first
    body = bytes((0x80 | len(historical), td1, *t1)) + historical
    return b"\x3b" + body + bytes((xor(body),))


def xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


ATR = build_atr()
ATR_CRC = build_atr(crc=True)  # 3B 8B 81 71 FE 45 01 ...: the same card, CRC epilogue
ATR_DUAL = build_atr(protocols=(0, 1))  # 3B 8B 80 31 FE 45 ...: T=0, or T=1 by PPS
ATR_DUAL_CRC = build_atr(protocols=(0, 1), crc=True)
ATR_T0 = build_atr(HISTORICAL_BYTES_T0, protocols=(0,))  # 3B 0B 80 73 00 00 80 ...

# ISO/IEC 7816-3 table 7 and 8: clock rate conversion Fi (with fmax) and baud rate adjustment
# Di; None marks the values the standard reserves for future use.
FI_TABLE: tuple[tuple[int, float] | None, ...] = (
    (372, 4.0), (372, 5.0), (558, 6.0), (744, 8.0), (1116, 12.0), (1488, 16.0),
    (1860, 20.0), None, None, (512, 5.0), (768, 7.5), (1024, 10.0), (1536, 15.0),
    (2048, 20.0), None, None,
)
DI_TABLE: tuple[int | None, ...] = (None, 1, 2, 4, 8, 16, 32, 64, 12, 20, None, None, None,
                                    None, None, None)
MAX_ATR = 33  # TS + 32 (ISO/IEC 7816-3 8.2.1)
DEFAULT_IFSC = 32
DEFAULT_CWI, DEFAULT_BWI = 13, 4


class AtrFault(Enum):
    """What is wrong with an ATR: lets a survey of many ATRs group its refusals."""

    EMPTY = "empty"
    TS = "TS neither 3B nor 3F"
    TOO_LONG = "longer than 33 bytes"
    TRUNCATED = "truncated"
    TRAILING = "bytes after the end"
    TCK = "TCK wrong"
    T15_IN_TD1 = "T=15 in TD1"
    RESERVED = "reserved value in an interface byte"


class AtrError(ValueError):
    """The bytes are not a well-formed ATR (or use a value the standard reserves)."""

    def __init__(self, message: str, fault: AtrFault) -> None:
        super().__init__(message)
        self.fault = fault


class Convention(Enum):
    DIRECT = 0x3B
    INVERSE = 0x3F


class Edc(Enum):
    """T=1 epilogue: TC3 b1 (ISO/IEC 7816-3 11.4.4)."""

    LRC = 1
    CRC = 2


_INVERSE = bytes(int(f"{b ^ 0xFF:08b}"[::-1], 2) for b in range(256))


def inverse_to_direct(raw: bytes) -> bytes:
    """Bytes read by a direct-convention UART from an inverse-convention card (where TS reads
    03): complement and bit-reverse each one (ISO/IEC 7816-3 8.1)."""
    return bytes(_INVERSE[b] for b in raw)


@dataclass(frozen=True, slots=True)
class InterfaceGroup:
    """TAi, TBi, TCi of group i, and the protocol T its TD(i-1) announced (None for i = 1)."""

    index: int
    protocol: int | None
    ta: int | None = None
    tb: int | None = None
    tc: int | None = None
    td: int | None = None


@dataclass(frozen=True, slots=True)
class Atr:
    raw: bytes
    convention: Convention
    groups: tuple[InterfaceGroup, ...]
    historical: bytes
    tck: int | None

    # -- global interface bytes -------------------------------------------------------------

    def _byte(self, index: int, name: str) -> int | None:
        if index > len(self.groups):
            return None
        return getattr(self.groups[index - 1], name)

    @property
    def protocols(self) -> tuple[int, ...]:
        """Offered protocols, first (the default) first; T=0 when no TD announces one."""
        found = [g.td & 0x0F for g in self.groups if g.td is not None and g.td & 0x0F != 15]
        return tuple(dict.fromkeys(found)) or (0,)

    @property
    def fi_di(self) -> tuple[int, int]:
        """(Fi, Di) from TA1, (372, 1) without it."""
        ta1 = self._byte(1, "ta")
        if ta1 is None:
            return 372, 1
        fi, di = FI_TABLE[ta1 >> 4], DI_TABLE[ta1 & 0x0F]
        if fi is None or di is None:
            raise AtrError(f"TA1 {ta1:02X} uses reserved Fi/Di values", AtrFault.RESERVED)
        return fi[0], di

    @property
    def specific_mode(self) -> int | None:
        """TA2 present: the card is in specific mode on this protocol (no PPS)."""
        ta2 = self._byte(2, "ta")
        return None if ta2 is None else ta2 & 0x0F

    @property
    def extra_guard_time(self) -> int:
        return self._byte(1, "tc") or 0

    @property
    def wi(self) -> int:
        """T=0 waiting time integer: TC2, 10 without it (10.2); 00 is reserved."""
        tc2 = self._byte(2, "tc")
        if tc2 is None:
            return 10
        if tc2 == 0:
            raise AtrError("TC2 00: WI 0 is reserved", AtrFault.RESERVED)
        return tc2

    def _t1(self, name: str) -> int | None:
        """The first T=1 specific byte of that name (groups 3 and up, after a TD with T=1)."""
        for group in self.groups[2:]:
            if group.protocol == 1 and getattr(group, name) is not None:
                return getattr(group, name)
        return None

    @property
    def ifsc(self) -> int:
        value = self._t1("ta")
        if value is None:
            return DEFAULT_IFSC
        if not 0x01 <= value <= 0xFE:
            raise AtrError(f"IFSC {value:02X} is reserved", AtrFault.RESERVED)
        return value

    @property
    def bwi(self) -> int:
        tb = self._t1("tb")
        return DEFAULT_BWI if tb is None else tb >> 4

    @property
    def cwi(self) -> int:
        tb = self._t1("tb")
        return DEFAULT_CWI if tb is None else tb & 0x0F

    @property
    def edc(self) -> Edc:
        tc = self._t1("tc")
        return Edc.CRC if tc is not None and tc & 1 else Edc.LRC


def atr_length(raw: bytes) -> int | None:
    """How long the ATR starting in `raw` is, or None if more bytes are needed to know:
    lets a reader stop reading exactly at the ATR's end."""
    if len(raw) < 2:
        return None
    y, pos, t_other_than_0 = raw[1] >> 4, 2, False
    historical = raw[1] & 0x0F
    while True:
        pos += bin(y & 0x7).count("1")  # TA, TB, TC
        if y & 0x8:
            if len(raw) <= pos:
                return None
            td = raw[pos]
            t_other_than_0 |= td & 0x0F != 0
            y, pos = td >> 4, pos + 1
        else:
            break
    return pos + historical + (1 if t_other_than_0 else 0)


def _check_td1(raw: bytes) -> None:
    """8.2.3: TD1 names the first offered protocol; T=15 is no protocol but the qualifier of
    global bytes in a later group, "invalid in TD1". Read as T=0 (no protocol named) such an
    ATR would send a T=0 reader to a card that never said it speaks T=0. Checked before the
    length: whatever else is wrong with it, this is what makes it unusable."""
    if len(raw) < 2 or not raw[1] & 0x80:
        return
    pos = 2 + bin(raw[1] >> 4 & 0x7).count("1")
    if pos < len(raw) and raw[pos] & 0x0F == 15:
        raise AtrError(f"TD1 {raw[pos]:02X} (byte {pos + 1} of the ATR) announces T=15, which "
                       "ISO/IEC 7816-3 8.2.3 forbids in TD1", AtrFault.T15_IN_TD1)


def parse_atr(raw: bytes) -> Atr:
    """Parse and check an ATR: structure, length, and TCK when one is required (any protocol
    other than T=0 announced). Inverse-convention ATRs are taken as read by a
    direct-convention UART (TS reads 03) or already decoded (TS 3F)."""
    if not raw:
        raise AtrError("empty ATR", AtrFault.EMPTY)
    if raw[0] == 0x03:
        raw = inverse_to_direct(raw)
    if raw[0] not in (0x3B, 0x3F):
        raise AtrError(f"TS {raw[0]:02X} is neither 3B (direct) nor 3F (inverse)", AtrFault.TS)
    _check_td1(raw)
    if len(raw) > MAX_ATR:
        raise AtrError(f"{len(raw)} bytes: an ATR has at most {MAX_ATR}", AtrFault.TOO_LONG)
    length = atr_length(raw)
    if length is None or length > len(raw):
        raise AtrError(f"truncated ATR ({len(raw)} bytes, {raw.hex(' ').upper()})",
                       AtrFault.TRUNCATED)
    if length < len(raw):
        raise AtrError(f"{len(raw) - length} bytes after the ATR's end", AtrFault.TRAILING)
    groups: list[InterfaceGroup] = []
    pos, y, protocol = 2, raw[1] >> 4, None
    while True:
        values: dict[str, int | None] = {}
        for bit, name in ((1, "ta"), (2, "tb"), (4, "tc")):
            if y & bit:
                values[name] = raw[pos]
                pos += 1
        td = raw[pos] if y & 8 else None
        pos += 1 if td is not None else 0
        groups.append(InterfaceGroup(len(groups) + 1, protocol, td=td, **values))
        if td is None:
            break
        y, protocol = td >> 4, td & 0x0F
    historical_count = raw[1] & 0x0F
    historical = raw[pos : pos + historical_count]
    pos += historical_count
    tck = raw[pos] if pos < len(raw) else None
    if tck is not None and xor(raw[1:]) != 0:
        raise AtrError(f"TCK {tck:02X} wrong: XOR of T0..TCK is {xor(raw[1:]):02X}, not 00",
                       AtrFault.TCK)
    return Atr(bytes(raw), Convention(raw[0]), tuple(groups), bytes(historical), tck)
