"""ISO/IEC 7816-4 APDU codec: command cases 1-4, short and extended length.

Shared by the card (parsing) and the terminal (building). Parsing never raises anything but
`ApduFormatError`: bytes that are none of the cases. The card answers it 6700 (WRONG LENGTH);
a terminal (an APDU script, the conformance CLI) says which case the bytes miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from card_applet.errors import NettxError

SHORT_MAX_DATA = 255
SHORT_MAX_LE = 256
EXTENDED_MAX_DATA = 65535
EXTENDED_MAX_LE = 65536

CLA_CHAINING = 0x10  # ISO 7816-4 5.4.1: b5 of an inter-industry CLA, "more commands follow"


class ApduFormatError(NettxError):
    """Bytes that are not a command APDU: no ISO 7816-4 case, short or extended, fits them."""


@dataclass(frozen=True, slots=True)
class CommandApdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None  # Ne: None = no Le field; 256 / 65536 encode as 00 / 0000
    extended: bool = False  # how it travelled (parse) or must travel (build)

    def __post_init__(self) -> None:
        if not (0 <= self.cla <= 0xFF and 0 <= self.ins <= 0xFF and 0 <= self.p1 <= 0xFF
                and 0 <= self.p2 <= 0xFF):
            for name in ("cla", "ins", "p1", "p2"):
                if not 0 <= getattr(self, name) <= 0xFF:
                    raise ValueError(f"{name} out of range")
        if len(self.data) > EXTENDED_MAX_DATA:
            raise ValueError("command data longer than 65535 bytes")
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX_LE:
            raise ValueError("Le must be 1..65536")

    @property
    def needs_extended(self) -> bool:
        return len(self.data) > SHORT_MAX_DATA or (self.le or 0) > SHORT_MAX_LE

    @property
    def is_chained(self) -> bool:
        return self.cla != 0xFF and bool(self.cla & CLA_CHAINING)

    def to_bytes(self) -> bytes:
        header = bytes((self.cla, self.ins, self.p1, self.p2))
        body = b""
        if self.extended or self.needs_extended:
            if self.data:
                body += b"\x00" + len(self.data).to_bytes(2, "big") + self.data
            if self.le is not None:
                le = (self.le % EXTENDED_MAX_LE).to_bytes(2, "big")
                body += le if self.data else b"\x00" + le
        else:
            if self.data:
                body += bytes((len(self.data),)) + self.data
            if self.le is not None:
                body += bytes((self.le % SHORT_MAX_LE,))
        return header + body

    @classmethod
    def from_bytes(cls, raw: bytes) -> CommandApdu:
        """Decode by ISO 7816-3 12.1.3 / 7816-4 5.1 case analysis."""
        if len(raw) < 4:
            raise ApduFormatError(f"{len(raw)} bytes: a command APDU starts with 4 "
                                  "(CLA INS P1 P2)")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        n = len(body)
        if n == 0:  # case 1
            return _decoded(cla, ins, p1, p2, b"", None, False)
        if n == 1:  # case 2S
            return _decoded(cla, ins, p1, p2, b"", body[0] or SHORT_MAX_LE, False)
        if body[0] != 0:  # short Lc
            lc = body[0]
            if n == 1 + lc:  # case 3S
                return _decoded(cla, ins, p1, p2, bytes(body[1:]), None, False)
            if n == 2 + lc:  # case 4S
                return _decoded(cla, ins, p1, p2, bytes(body[1:-1]), body[-1] or SHORT_MAX_LE,
                                False)
            raise ApduFormatError(f"short Lc says {lc} data bytes, so the body after the "
                                  f"header is {1 + lc} bytes (or {2 + lc} with Le), not {n}")
        # body[0] == 0 and n >= 2: extended
        if n == 3:  # case 2E
            return _decoded(cla, ins, p1, p2, b"", _ext_le(body[1:3]), True)
        if n < 3:
            raise ApduFormatError("a body starting 00 is extended length: 00 and two length "
                                  f"bytes, but only {n} bytes follow the header")
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise ApduFormatError("extended Lc of 0000: an extended body with data needs Lc "
                                  "of 1..65535")
        if n == 3 + lc:  # case 3E
            return _decoded(cla, ins, p1, p2, bytes(body[3:]), None, True)
        if n == 5 + lc:  # case 4E
            return _decoded(cla, ins, p1, p2, bytes(body[3:-2]), _ext_le(body[-2:]), True)
        raise ApduFormatError(f"extended Lc says {lc} data bytes, so the body after the header "
                              f"is {3 + lc} bytes (or {5 + lc} with a 2-byte Le), not {n}")


# The card decodes every command it receives, so decoding skips the dataclass constructor:
# what it would check (each header field a byte, data at most 65535 bytes, Le 1..65536)
# holds by construction for fields read from bytes and length fields. The slots' own
# setters fill the frozen instance, as the generated __init__ does.
_new = object.__new__


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The slots' setters of `cls`'s fields, which must be exactly `names`: a decoder that
    fills an instance through them would leave a new field unset."""
    if tuple(f.name for f in fields(cls)) != names:
        raise RuntimeError(f"{cls.__name__}'s fields changed: its decoder must set them all")
    return tuple(cls.__dict__[name].__set__ for name in names)


_SET = _slot_setters(CommandApdu, ("cla", "ins", "p1", "p2", "data", "le", "extended"))


def _decoded(cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None,
             extended: bool) -> CommandApdu:
    cmd = _new(CommandApdu)
    set_cla, set_ins, set_p1, set_p2, set_data, set_le, set_extended = _SET
    set_cla(cmd, cla)
    set_ins(cmd, ins)
    set_p1(cmd, p1)
    set_p2(cmd, p2)
    set_data(cmd, data)
    set_le(cmd, le)
    set_extended(cmd, extended)
    return cmd


def _ext_le(two: bytes) -> int:
    return int.from_bytes(two, "big") or EXTENDED_MAX_LE


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise ValueError(f"response APDU of {len(raw)} bytes has no status word")
        return _response(bytes(raw[:-2]), (raw[-2] << 8) | raw[-1])


# The terminal decodes every response: as for commands, the slots' setters fill the frozen
# instance without the dataclass constructor (nothing to check for fields read from bytes).
_SET_DATA, _SET_SW = _slot_setters(ResponseApdu, ("data", "sw"))


def _response(data: bytes, sw: int) -> ResponseApdu:
    resp = _new(ResponseApdu)
    _SET_DATA(resp, data)
    _SET_SW(resp, sw)
    return resp
