"""HKDF-SHA256 (RFC 5869) on the standard library's one-shot HMAC.

The same bytes as pycryptodome's `HKDF(ikm, length, salt, SHA256, context=info)`, at a
fraction of the cost: that one builds an HMAC object and a hash object per block, and the card
derives a key on every PSO and authentication (tests/card_applet/test_kdf.py checks both
against each other and against RFC 5869's test vectors).
"""

from __future__ import annotations

import hmac

HASH = "sha256"
HASH_SIZE = 32


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    if not 1 <= length <= 255 * HASH_SIZE:
        raise ValueError("HKDF-SHA256 output is 1..8160 bytes")
    prk = hmac.digest(salt or bytes(HASH_SIZE), ikm, HASH)  # extract
    if length <= HASH_SIZE:  # expand: one block is all the card ever asks for
        return hmac.digest(prk, info + b"\x01", HASH)[:length]
    out, block = b"", b""
    for counter in range(1, -(-length // HASH_SIZE) + 1):
        block = hmac.digest(prk, block + info + bytes((counter,)), HASH)
        out += block
    return out[:length]
