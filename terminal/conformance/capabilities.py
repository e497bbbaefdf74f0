"""What a card says it offers, read from its ATR: ISO/IEC 7816-3 8.2 (the interface bytes,
to find the historical bytes) and ISO/IEC 7816-4:2005 8.1.1.2.7 (card capabilities, the
COMPACT-TLV object tag 7 among the historical bytes).

Checks of optional features ask these first: a card that does not advertise command chaining
and refuses it is "not applicable"; one that advertises it and refuses it fails.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Capabilities:
    known: bool = False  # the ATR carried a card capabilities object
    full_df_name: bool = False
    partial_df_name: bool = False
    chaining: bool = False
    extended_length: bool = False
    logical_channels: int = 0  # channels the card says it has, besides the basic one

    @property
    def summary(self) -> str:
        if not self.known:
            return "no card capabilities in the ATR"
        parts = [name for name, on in (("full DF name", self.full_df_name),
                                       ("partial DF name", self.partial_df_name),
                                       ("chaining", self.chaining),
                                       ("extended length", self.extended_length)) if on]
        if self.logical_channels:
            parts.append(f"{self.logical_channels} logical channels")
        return ", ".join(parts) or "none"


def historical_bytes(atr: bytes) -> bytes:
    """The historical bytes of an ATR (empty if it is too short to hold them)."""
    if len(atr) < 2:
        return b""
    t0 = atr[1]
    count, y, pos = t0 & 0x0F, t0 >> 4, 2
    while True:
        for bit in (0x1, 0x2, 0x4):  # TA, TB, TC
            if y & bit:
                pos += 1
        if not y & 0x8:
            break
        if pos >= len(atr):
            return b""
        td = atr[pos]
        pos += 1
        y = td >> 4
    return bytes(atr[pos : pos + count])


def from_atr(atr: bytes) -> Capabilities:
    hist = historical_bytes(atr)
    # category 00 and 80 carry COMPACT-TLV objects (00: the last 3 bytes are a status)
    if not hist or hist[0] not in (0x00, 0x80):
        return Capabilities()
    body = hist[1:-3] if hist[0] == 0x00 else hist[1:]
    i = 0
    while i < len(body):
        tag, length = body[i] >> 4, body[i] & 0x0F
        value = body[i + 1 : i + 1 + length]
        i += 1 + length
        if tag != 0x7 or not value:
            continue
        first = value[0]
        third = value[2] if len(value) >= 3 else 0
        channels = 0
        if third & 0x18:  # b5-b4: channel number assignment by card / by interface device
            channels = third & 0x07  # b3-b1: maximum number of channels - 1
        return Capabilities(known=True, full_df_name=bool(first & 0x80),
                            partial_df_name=bool(first & 0x40), chaining=bool(third & 0x80),
                            extended_length=bool(third & 0x40), logical_channels=channels)
    return Capabilities()
