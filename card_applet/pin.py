"""PIN and PUK reference data: the card keeps a block (card_applet/vocabulary.py's PIN block
format) only as a salted HMAC, and compares in constant time."""

from __future__ import annotations

import hashlib
import hmac


def pin_hash(salt: bytes, block: bytes) -> bytes:
    return hmac.new(salt, block, hashlib.sha256).digest()


def matches(salt: bytes, block: bytes, stored: bytes) -> bool:
    return hmac.compare_digest(pin_hash(salt, block), stored)
