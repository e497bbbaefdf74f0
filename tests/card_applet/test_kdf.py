"""card_applet.kdf: HKDF-SHA256 on the standard library gives RFC 5869's bytes and the same
bytes as pycryptodome's HKDF, which the card used before (and the vectors were made with)."""

from __future__ import annotations

import secrets

import pytest
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from card_applet.kdf import hkdf_sha256


@pytest.mark.parametrize(("ikm", "salt", "info", "okm"), [
    # RFC 5869 A.1 and A.3 (SHA-256)
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    ("0b" * 22, "", "",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
])
def test_rfc5869(ikm: str, salt: str, info: str, okm: str) -> None:
    out = bytes.fromhex(okm)
    assert hkdf_sha256(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info),
                       len(out)) == out


@pytest.mark.parametrize("length", [1, 16, 31, 32, 33, 64, 100])
def test_same_bytes_as_pycryptodome(length: int) -> None:
    for _ in range(20):
        ikm, salt = secrets.token_bytes(32), secrets.token_bytes(secrets.randbelow(40) + 1)
        info = secrets.token_bytes(secrets.randbelow(200))
        assert hkdf_sha256(ikm, salt, info, length) == HKDF(ikm, length, salt, SHA256,
                                                            context=info)


@pytest.mark.parametrize("length", [0, 255 * 32 + 1])
def test_length_bounds(length: int) -> None:
    with pytest.raises(ValueError):
        hkdf_sha256(b"k", b"s", b"i", length)
