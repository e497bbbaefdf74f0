"""The card's Answer-To-Reset (ISO/IEC 7816-3 8.2).

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
"""

from __future__ import annotations

from functools import reduce

HISTORICAL_BYTES = bytes.fromhex("80 73 00 00 C0") + bytes((0x55,)) + b"nettx"


def build_atr(historical: bytes = HISTORICAL_BYTES, ifsc: int = 0xFE, bwi_cwi: int = 0x45) -> bytes:
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    body = bytes((0x80 | len(historical), 0x81, 0x31, ifsc, bwi_cwi)) + historical
    tck = reduce(lambda a, b: a ^ b, body, 0)
    return b"\x3b" + body + bytes((tck,))


ATR = build_atr()
