"""card_applet.kdf: HMAC-SHA256 on hashlib gives the standard library's bytes; HKDF-SHA256
gives RFC 5869's bytes and the same bytes as pycryptodome's HKDF, which the card used before
(and the vectors were made with)."""

from __future__ import annotations

import hmac
import secrets

import pytest
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from card_applet.kdf import Hkdf, HmacKey, hkdf_sha256, hmac_sha256


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


@pytest.mark.parametrize("key_size", [0, 1, 22, 32, 63, 64, 65, 200])
def test_hmac_same_bytes_as_the_standard_library(key_size: int) -> None:
    for message_size in (0, 1, 55, 56, 64, 119, 1000):
        key, message = secrets.token_bytes(key_size), secrets.token_bytes(message_size)
        expected = hmac.digest(key, message, "sha256")
        assert hmac_sha256(key, message) == expected
        prepared = HmacKey(key)
        assert prepared.digest(message) == expected
        assert prepared.digest(message) == expected  # a prepared key serves again


@pytest.mark.parametrize("length", [1, 32, 33, 100])
def test_hkdf_with_a_prepared_salt_is_hkdf(length: int) -> None:
    for salt in (b"", b"EP0791901/card/v1/seal", secrets.token_bytes(80)):
        ikm, info = secrets.token_bytes(32), secrets.token_bytes(40)
        assert Hkdf(salt).derive(ikm, info, length) == hkdf_sha256(ikm, salt, info, length)
