"""HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869) on hashlib's SHA-256.

The same bytes as the standard library's `hmac.digest` and pycryptodome's
`HKDF(ikm, length, salt, SHA256, context=info)` (tests/card_applet/test_kdf.py checks them
against each other and against the RFCs' test vectors), at a fraction of the cost, and
without letting go of the interpreter lock: `hmac.digest` releases the GIL around every call,
so in a process with other threads (a bench's holders, a server's commit thread) each MAC may
hand the interpreter over and wait a whole switch interval (5 ms) to get it back. hashlib
keeps the GIL for inputs under 2 KiB, which is every input here. The card derives a key or
MACs on every PSO and authentication.
"""

from __future__ import annotations

from hashlib import sha256

HASH_SIZE = 32
BLOCK_SIZE = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _block_key(key: bytes) -> bytes:
    if len(key) > BLOCK_SIZE:  # RFC 2104: a longer key is hashed first
        key = sha256(key).digest()
    return key.ljust(BLOCK_SIZE, b"\x00")


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of `message` under `key`: the bytes of hmac.digest(key, message, "sha256")."""
    block = _block_key(key)
    inner = sha256(block.translate(_IPAD) + message).digest()
    return sha256(block.translate(_OPAD) + inner).digest()


class HmacKey:
    """A key used for many MACs (a constant salt, a peer's derived key): its padded blocks
    hashed once, so each MAC costs two hash copies and two short updates."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = _block_key(key)
        self._inner = sha256(block.translate(_IPAD))
        self._outer = sha256(block.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac_sha256(salt or bytes(HASH_SIZE), ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int = 32) -> bytes:
    if not 1 <= length <= 255 * HASH_SIZE:
        raise ValueError("HKDF-SHA256 output is 1..8160 bytes")
    if length <= HASH_SIZE:  # one block is all the card ever asks for
        return hmac_sha256(prk, info + b"\x01")[:length]
    key = HmacKey(prk)
    out, block = b"", b""
    for counter in range(1, -(-length // HASH_SIZE) + 1):
        block = key.digest(block + info + bytes((counter,)))
        out += block
    return out[:length]


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    if not 1 <= length <= 255 * HASH_SIZE:
        raise ValueError("HKDF-SHA256 output is 1..8160 bytes")
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


class Hkdf:
    """HKDF-SHA256 with one constant salt (a purpose's label): the extract step's key is
    prepared once."""

    __slots__ = ("_extract",)

    def __init__(self, salt: bytes) -> None:
        self._extract = HmacKey(salt or bytes(HASH_SIZE))

    def prk(self, ikm: bytes) -> bytes:
        return self._extract.digest(ikm)

    def derive(self, ikm: bytes, info: bytes, length: int = 32) -> bytes:
        return hkdf_expand(self._extract.digest(ikm), info, length)
