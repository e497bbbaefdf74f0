"""Blom / KPS key scheme v1 (DESIGN.md "Key scheme", exact): field GF(2^255 - 19),
identifier mapping, row evaluation and the pair key.

The card only ever evaluates its own row at a peer's point; building rows from the master
is the trusted centre's job (host/centre/authority.py), which batches it as a matrix product.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from card_applet.kdf import hkdf_sha256

P = 2**255 - 19
ELEMENT_SIZE = 32
ID_DOMAIN = b"EP0791901/blom/v1/id"
PAIR_SALT = b"EP0791901/blom/v1/pair"
MAX_ID_BYTES = 64


class IdentifierError(ValueError):
    pass


def identifier_bytes(identifier: str | bytes) -> bytes:
    raw = identifier.encode("utf-8") if isinstance(identifier, str) else bytes(identifier)
    if not 1 <= len(raw) <= MAX_ID_BYTES:
        raise IdentifierError(f"identifier must be 1..{MAX_ID_BYTES} bytes of UTF-8")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IdentifierError("identifier is not valid UTF-8") from exc
    return raw


def x_of(identifier: str | bytes) -> int:
    digest = hashlib.sha256(ID_DOMAIN + b"\x00" + identifier_bytes(identifier)).digest()
    return int.from_bytes(digest, "big") % P


def element_to_bytes(e: int) -> bytes:
    return e.to_bytes(ELEMENT_SIZE, "big")


def element_from_bytes(raw: bytes) -> int:
    if len(raw) != ELEMENT_SIZE:
        raise ValueError("field element must be 32 bytes")
    value = int.from_bytes(raw, "big")
    if value >= P:
        raise ValueError("field element not reduced mod p")
    return value


def row_from_bytes(raw: bytes) -> list[int]:
    if not raw or len(raw) % ELEMENT_SIZE:
        raise ValueError("row must be a non-empty multiple of 32 bytes")
    return [element_from_bytes(raw[i : i + ELEMENT_SIZE]) for i in range(0, len(raw), 32)]


def row_to_bytes(row: Sequence[int]) -> bytes:
    return b"".join(element_to_bytes(v) for v in row)


def shared_element(row: Sequence[int], peer_x: int) -> int:
    """e(a, b) = sum_j r_a[j] * x(b)^j, by Horner from the highest coefficient."""
    acc = 0
    for coefficient in reversed(row):
        acc = (acc * peer_x + coefficient) % P
    return acc


def row_for(master: Sequence[Sequence[int]], x: int) -> list[int]:
    """r[j] = sum_i D[j][i] x^i: the reference (slow) evaluation, one row at a time."""
    return [shared_element(master_row, x) for master_row in master]


def pair_key(element: int, id_a: str | bytes, id_b: str | bytes) -> bytes:
    lo, hi = sorted((identifier_bytes(id_a), identifier_bytes(id_b)))
    info = b"pair" + bytes((len(lo),)) + lo + bytes((len(hi),)) + hi
    return hkdf_sha256(element_to_bytes(element), PAIR_SALT, info)
