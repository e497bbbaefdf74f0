"""BER-TLV (ISO/IEC 7816-4 5.2) for the applet's data objects: one- and two-byte tags,
definite lengths up to 65535. Parsing failures are the caller's `WRONG_DATA`."""

from __future__ import annotations

from collections.abc import Collection, Iterator
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
    # every command and answer builds a few of these: the common one-byte tag and short
    # length are written without the helpers (the same bytes as Tlv(tag, value).to_bytes())
    n = len(value)
    if tag <= 0xFF and n < 0x80:
        return bytes((tag, n)) + value
    return encode_tag(tag) + encode_length(n) + value


def _items(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(tag, value) for each data object of a flat list, in order."""
    end = len(data)
    i = 0
    while i < end:
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:  # two-byte tag
            if i >= end or data[i] & 0x80:
                raise TlvError("unsupported tag")
            tag = (tag << 8) | data[i]
            i += 1
        if i >= end:
            raise TlvError("missing length")
        length = data[i]
        i += 1
        if length >= 0x80:
            if length not in (0x81, 0x82):
                raise TlvError("unsupported length form")
            n = length - 0x80
            if i + n > end:
                raise TlvError("truncated length")
            length = int.from_bytes(data[i : i + n], "big")
            i += n
        if i + length > end:
            raise TlvError("value runs past the end")
        yield tag, bytes(data[i : i + length])
        i += length


def parse(data: bytes) -> list[Tlv]:
    return [Tlv(tag, value) for tag, value in _items(data)]


def parse_unique(data: bytes, allowed: Collection[int]) -> dict[int, bytes]:
    """Parse a flat list of distinct tags, every one of them in `allowed`."""
    found: dict[int, bytes] = {}
    for tag, value in _items(data):
        if tag not in allowed or tag in found:
            raise TlvError(f"unexpected or repeated tag {tag:02X}")
        found[tag] = value
    return found
