"""BER-TLV (ISO/IEC 7816-4 5.2) for the applet's data objects: one- and two-byte tags,
definite lengths up to 65535. Parsing failures are the caller's `WRONG_DATA`."""

from __future__ import annotations

from dataclasses import dataclass


class TlvError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    value: bytes

    def to_bytes(self) -> bytes:
        return encode_tag(self.tag) + encode_length(len(self.value)) + self.value


def encode_tag(tag: int) -> bytes:
    return tag.to_bytes(1 if tag <= 0xFF else 2, "big")


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    if n <= 0xFFFF:
        return b"\x82" + n.to_bytes(2, "big")
    raise TlvError("TLV value longer than 65535 bytes")


def tlv(tag: int, value: bytes) -> bytes:
    return Tlv(tag, value).to_bytes()


def parse(data: bytes) -> list[Tlv]:
    out: list[Tlv] = []
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:  # two-byte tag
            if i >= len(data) or data[i] & 0x80:
                raise TlvError("unsupported tag")
            tag = (tag << 8) | data[i]
            i += 1
        if i >= len(data):
            raise TlvError("missing length")
        first = data[i]
        i += 1
        if first < 0x80:
            length = first
        elif first in (0x81, 0x82):
            n = first - 0x80
            if i + n > len(data):
                raise TlvError("truncated length")
            length = int.from_bytes(data[i : i + n], "big")
            i += n
        else:
            raise TlvError("unsupported length form")
        if i + length > len(data):
            raise TlvError("value runs past the end")
        out.append(Tlv(tag, bytes(data[i : i + length])))
        i += length
    return out


def parse_unique(data: bytes, allowed: set[int]) -> dict[int, bytes]:
    """Parse a flat list of distinct tags, every one of them in `allowed`."""
    found: dict[int, bytes] = {}
    for item in parse(data):
        if item.tag not in allowed or item.tag in found:
            raise TlvError(f"unexpected or repeated tag {item.tag:02X}")
        found[item.tag] = item.value
    return found
